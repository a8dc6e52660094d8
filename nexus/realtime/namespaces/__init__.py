"""Class-based Socket.IO namespaces."""
