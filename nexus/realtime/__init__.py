"""Socket.IO adapters: namespaces, the broadcast facade, acks and connection auth."""
