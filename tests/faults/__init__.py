"""Fault injection: real instances, real clients, and the things they depend on killed, stopped or restarted."""
