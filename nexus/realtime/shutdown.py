"""Graceful shutdown of one instance (SIGTERM from Heroku, systemd or gunicorn; SIGINT in development).

1. new connections are refused (UNAVAILABLE), and the instance stops answering `ready`;
   HTTP connections stop being kept alive: those waiting for their next request (or for the
   rest of one) are closed now, the others after their response (`Connection: close`);
2. the events being handled when the drain begins finish (their messages committed and
   acknowledged), for at most half the grace;
3. every client is told `server_shutdown {reconnectAfterMs}`;
4. the transports are dropped without a close packet (neither Socket.IO's disconnect nor
   engine.io's close, after which clients would stay away), so socket.io clients see the
   transport close and reconnect by themselves (to another instance behind the load balancer),
   each after its session's disconnect bookkeeping, many side by side; those whose bookkeeping
   has not run when the grace is nearly over are closed without it;
5. the upkeep greenlet stops and this instance withdraws its presence entries;
all within `NEXUS_SHUTDOWN_GRACE_S`. What clients still hold open when the grace ends (a WebSocket
that never answers the close, a request that never finishes arriving) is cut by the server that
runs the drain (nexus.server.GunicornWorker, `nexus serve`), so the process exits in time.
"""
from __future__ import annotations

import logging
import time
from threading import Lock, Semaphore, local
from typing import Any

from nexus.realtime import events
from nexus.protocol.websocket import DirectOutput
from nexus.server import CONNECTIONS

log = logging.getLogger("nexus.shutdown")

NOTICE_FLUSH_S = 0.3
#: The drain stops ending sessions this long before its grace is over, to withdraw this instance.
SESSIONS_END_BEFORE_S = 1.0
#: Sessions ended side by side (each one's disconnect bookkeeping reaches Redis and the database).
PARALLEL_ENDS = 32


class InFlight:
    """How many events this instance is handling right now.

    Once the drain has begun, events that start are counted apart (`late`), so the drain waits
    for the events that were under way when it began, not for a stream that never stops."""

    def __init__(self) -> None:
        self._lock = Lock()
        self._late_here = local()  # whether the event of this greenlet (or thread) began late
        self.count = 0
        self.late = 0
        self.draining = False

    def __enter__(self) -> "InFlight":
        with self._lock:
            if self.draining:
                self.late += 1
                self._late_here.late = True
            else:
                self.count += 1
        return self

    def __exit__(self, *_: Any) -> None:
        with self._lock:
            if self.draining and getattr(self._late_here, "late", False):
                self._late_here.late = False
                self.late -= 1
            else:
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
        idle_closed = CONNECTIONS.begin_drain()

        # The events under way finish, for at most half the grace; the rest of it is for telling
        # clients, letting them go and withdrawing this instance, so a busy instance ends in time.
        self.in_flight.draining = True
        waited_for = self.in_flight.count
        events_deadline = deadline - grace / 2
        while self.in_flight.count > 0 and time.monotonic() < events_deadline:
            self.socketio.sleep(0.05)

        facade = self.app.extensions["nexus.broadcaster"]
        for namespace in list(server.namespace_handlers):
            facade.emit_here(events.SERVER_SHUTDOWN, {"reconnectAfterMs": reconnect_after_ms}, namespace=namespace)
        self.socketio.sleep(min(NOTICE_FLUSH_S, max(0.0, deadline - time.monotonic())))

        dropped, left = self._end_sessions([sock for _, sock in server.eio.sockets.items()],
                                           deadline - SESSIONS_END_BEFORE_S)

        keeper = self.app.extensions.get("nexus.keeper")
        if keeper is not None:
            keeper.stop()
        try:
            self.app.extensions["nexus.stores"].tally.close()
        except Exception as exc:  # Redis down: the heartbeat expiry does the rest
            log.warning("could not withdraw this instance's presence: %s", exc)
        self.done = True
        report = {"waitedForEvents": waited_for, "dropped": dropped, "left": left, "idleClosed": idle_closed,
                  "seconds": round(grace - (deadline - time.monotonic()), 2)}
        log.info("shutdown complete: %s", report)
        return report

    def _end_sessions(self, sessions: list[Any], until: float) -> tuple[int, int]:
        """End engine.io sessions, PARALLEL_ENDS at a time (each runs its disconnect bookkeeping,
        then its transport closes), until `until`; the WebSockets of those left are closed then,
        without their bookkeeping, so that every client has gone by the end of the grace.
        Returns (sessions ended, sessions left)."""
        slots = Semaphore(PARALLEL_ENDS)

        def end(sock: Any) -> None:
            try:
                sock.close(wait=False, abort=True)  # no close packet: clients reconnect on their own
            except Exception as exc:  # its bookkeeping failed: the transport is closed below anyway
                log.debug("ending session %s: %s", getattr(sock, "sid", "?"), exc)
            finally:
                slots.release()

        for sock in sessions:
            if sock.closed or sock.closing:
                continue
            if not slots.acquire(timeout=max(0.0, until - time.monotonic())):
                break
            self.socketio.start_background_task(end, sock)
        while any(not sock.closed for sock in sessions) and time.monotonic() < until:
            self.socketio.sleep(0.02)
        left = [sock for sock in sessions if not sock.closed]
        for sock in left:
            output = getattr(sock, "queue", None)
            if isinstance(output, DirectOutput):
                output.close()
        if left:
            log.warning("grace nearly over: %d session(s) closed without their disconnect bookkeeping", len(left))
        return len(sessions) - len(left), len(left)
