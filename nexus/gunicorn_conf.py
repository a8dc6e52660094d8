"""gunicorn settings for Nexus (`gunicorn -c python:nexus.gunicorn_conf ...`): timeouts that fit
long-lived connections and the graceful shutdown of nexus.realtime.shutdown."""
import os

# The drain has NEXUS_SHUTDOWN_GRACE_S; gunicorn waits a little longer before it kills.
graceful_timeout = int(os.environ.get("NEXUS_SHUTDOWN_GRACE_S", "10")) + 5
# A gevent worker that does not notify the master for this long is restarted.
timeout = 30
# HTTP keep-alive between a load balancer and this instance.
keepalive = 75
# One worker per instance: Flask-SocketIO keeps its sessions in the worker's memory.
workers = 1
# Connections the worker accepts at once (the file-descriptor limit is the other bound); past it
# gunicorn stops accepting, and new clients wait in the listen queue.
def _count(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise SystemExit(f"nexus: configuration error: {name}: must be a positive whole number, not {raw!r}")
    return value


worker_connections = _count("NEXUS_WORKER_CONNECTIONS", 50_000)
