"""Shared live state behind small interfaces: memory for one process (Redis for many comes with presence)."""
