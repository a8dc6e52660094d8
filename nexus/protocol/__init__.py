"""Engine.IO v4 and Socket.IO v5 on the wire: framing, transports, heartbeat, packets.

The namespaces (nexus.realtime) sit on top of this package; python-socketio and python-engineio
are reached from here only, and the tests under tests/protocol fail if a release moves what
these modules rely on.
"""
