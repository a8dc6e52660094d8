"""Graceful shutdown of one instance (SIGTERM from Heroku, systemd or gunicorn; SIGINT in development).

1. new connections are refused (UNAVAILABLE), and the instance stops answering `ready`;
2. events being handled finish (their messages committed and acknowledged);
3. every client is told `server_shutdown {reconnectAfterMs}`;
4. the transports are dropped without a close packet (neither Socket.IO's disconnect nor
   engine.io's close, after which clients would stay away), so socket.io clients see the
   transport close and reconnect by themselves (to another instance behind the load balancer);
5. the upkeep greenlet stops and this instance withdraws its presence entries;
all within `NEXUS_SHUTDOWN_GRACE_S`.
"""
from __future__ import annotations

import logging
import time
from threading import Lock
from typing import Any

from nexus.realtime import events

log = logging.getLogger("nexus.shutdown")

NOTICE_FLUSH_S = 0.3


class InFlight:
    """How many events this instance is handling right now."""

    def __init__(self) -> None:
        self._lock = Lock()
        self.count = 0

    def __enter__(self) -> "InFlight":
        with self._lock:
            self.count += 1
        return self

    def __exit__(self, *_: Any) -> None:
        with self._lock:
            self.count -= 1


class Shutdown:
    """Drains this instance; `closing` is checked on every new connection."""

    def __init__(self, app: Any, socketio: Any, grace_s: float):
        self.app = app
        self.socketio = socketio
        self.grace_s = grace_s
        self.in_flight = InFlight()
        self.closing = False
        self.done = False

    def drain(self, grace_s: float | None = None, reconnect_after_ms: int = 1000) -> dict[str, Any]:
        """Run the steps of the module docstring; returns what was done, for the log and tests."""
        if self.closing:
            return {}
        self.closing = True
        grace = self.grace_s if grace_s is None else grace_s
        deadline = time.monotonic() + grace
        server = self.socketio.server
        log.info("shutting down: %d engine.io sessions, grace %.0fs", len(server.eio.sockets), grace)

        waited_for = self.in_flight.count
        while self.in_flight.count > 0 and time.monotonic() < deadline - 1:
            self.socketio.sleep(0.05)

        facade = self.app.extensions["nexus.broadcaster"]
        for namespace in list(server.namespace_handlers):
            facade.emit_here(events.SERVER_SHUTDOWN, {"reconnectAfterMs": reconnect_after_ms}, namespace=namespace)
        self.socketio.sleep(min(NOTICE_FLUSH_S, max(0.0, deadline - time.monotonic())))

        dropped = 0
        for eio_sid, eio_socket in list(server.eio.sockets.items()):
            try:
                eio_socket.close(wait=False, abort=True)  # no close packet: clients reconnect on their own
                dropped += 1
            except Exception:  # already gone
                log.debug("session %s was already closed", eio_sid)

        keeper = self.app.extensions.get("nexus.keeper")
        if keeper is not None:
            keeper.stop()
        try:
            self.app.extensions["nexus.stores"].tally.close()
        except Exception as exc:  # Redis down: the heartbeat expiry does the rest
            log.warning("could not withdraw this instance's presence: %s", exc)
        self.done = True
        report = {"waitedForEvents": waited_for, "dropped": dropped, "seconds": round(grace - (deadline - time.monotonic()), 2)}
        log.info("shutdown complete: %s", report)
        return report
