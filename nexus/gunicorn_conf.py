"""gunicorn settings for Nexus (`gunicorn -c python:nexus.gunicorn_conf ...`): timeouts that fit
long-lived connections and the graceful shutdown of nexus.realtime.shutdown."""
import os


def _grace_s() -> int:
    raw = os.environ.get("NEXUS_SHUTDOWN_GRACE_S", "10")
    try:
        return max(1, int(raw))
    except ValueError:
        return 10  # nexus.config refuses it, with the reason, when the worker loads the app


# The worker (nexus.server.GunicornWorker) has exited by the end of NEXUS_SHUTDOWN_GRACE_S,
# whatever clients hold open; the master waits 5 s more before it would SIGKILL, so it never has to.
graceful_timeout = _grace_s() + 5
# A gevent worker that does not notify the master for this long is restarted.
timeout = 30
# HTTP keep-alive between a load balancer and this instance. Nexus's worker serves HTTP with
# gevent's pywsgi, which does not read this: nexus.server closes a kept-alive connection idle for
# NEXUS_KEEPALIVE_TIMEOUT_S (75 s unless set).
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


def _json_lines() -> bool:
    """NEXUS_LOG_JSON, JSON by default in production, as nexus.config reads them (the worker's
    configuration refuses a value that is neither true nor false, with the reason)."""
    value = (os.environ.get("NEXUS_LOG_JSON") or "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    mode = (os.environ.get("NEXUS_ENV") or "").strip() or (os.environ.get("NODE_ENV") or "").strip()
    return mode.lower() == "production"


# gunicorn's own lines (gunicorn.error: start, workers, signals; gunicorn.access) go to the root
# logger, whose handler is Nexus's (nexus.logs.console_handler): JSON lines in production, like the
# application's. In the worker, the application's logging setup replaces that handler (same name)
# with its own, so each line is written once.
logconfig_dict = {
    "root": {"level": "INFO", "handlers": ["nexus"]},
    "loggers": {
        "gunicorn.error": {"handlers": [], "propagate": True},
        "gunicorn.access": {"handlers": [], "propagate": True},
    },
    "handlers": {"nexus": {"()": "nexus.logs.console_handler", "json_lines": _json_lines()}},
}


def worker_exit(server, worker) -> None:  # noqa: ANN001 - gunicorn's server hook
    """A worker that stopped by its own drain leaves at once: Python's teardown of a large heap
    took 0.4–1 s of CPU, and the kernel frees the memory anyway (logs are flushed first)."""
    if getattr(worker, "stopped_cleanly", False):
        import logging
        import sys

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
