"""Engine.IO's WebSocket transport and the shared heartbeat, as Nexus runs them.

- Once a session is on its WebSocket, the greenlet of the HTTP request that opened it returns:
  the event loop watches the socket, and a greenlet exists only while frames are being read and
  handled (nexus.server.LimitedWebSocket.watch); the session's `DirectOutput` is what the reader
  hands each message to, and hears when the connection ends. A socket the loop cannot watch
  (TLS) keeps that greenlet, reading;
- packets are written straight to the socket by whoever sends them, through the session's
  `DirectOutput`, and a packet's WebSocket frame is built once however many sockets it goes to
  (python-socketio hands the same packet object to every member of a room); what the handlers of
  one message write to its own socket goes out in one send;
- one `Pinger` per server sends Engine.IO's PING to every session (WebSocket and long-polling)
  when it is due and closes a session whose PONG has not come within pingTimeout, from one
  greenlet that sleeps until the next deadline.

The session itself (what a packet means, closing, the upgrade from long-polling) is
nexus.protocol.polling's `EngineSession`; this module only moves its packets over a WebSocket.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import time
import weakref
from typing import Any, Callable

import gevent
from gevent.event import Event
from engineio import packet as eio_packet
from geventwebsocket.exceptions import WebSocketError

from nexus.server import frame_header

log = logging.getLogger("nexus.transport")

_FRAME = "_nexus_frame"
CLOSE_GRACE_S = 5.0
#: How long the probe exchange of an upgrade may take (Engine.IO's upgradeTimeout); meanwhile the
#: session's GETs are answered at once, so a stalled probe must not last.
UPGRADE_TIMEOUT_S = 10.0
PROTOCOL_ERROR = 1002


def frame_of(pkt: Any) -> bytes:
    """The WebSocket frame of an engine.io packet, built once and kept on the packet."""
    frame = pkt.__dict__.get(_FRAME)
    if frame is None:
        data = pkt.encode()
        if isinstance(data, str):
            payload = data.encode()
            frame = frame_header(len(payload), 0x1) + payload
        else:
            frame = frame_header(len(data), 0x2) + data
        pkt.__dict__[_FRAME] = frame
    return frame


class DirectOutput:
    """A session's output once it is on WebSocket: `put` writes the packet's frame. It is also
    what the WebSocket's reader hands the client's messages to (`received`), and tells when the
    connection is over (`lost`)."""

    __slots__ = ("ws", "session", "closed")

    def __init__(self, ws: Any, session: Any = None):
        self.ws = ws
        self.session = session
        self.closed = False

    def put(self, pkt: Any, block: bool = True, timeout: float | None = None) -> None:
        if pkt is None:  # the session is closing
            self.close()
            return
        if self.closed:
            return
        try:
            self.ws.write(frame_of(pkt))
        except WebSocketError:
            self.closed = True  # the reader sees the connection end and closes the session

    def received(self, data: Any) -> bool:
        """Handle one message from the client; False once the session is over (the reader stops)."""
        session = self.session
        if self.closed or session is None:
            return False
        if len(data) > session.max_payload:
            log.info("WebSocket ended (a packet larger than maxPayload)")
            return False
        try:
            session.receive(data)
        except ValueError as exc:  # not an Engine.IO packet: that session ends
            log.warning("closed a WebSocket that sent a malformed packet (%s)", exc)
            self.close(PROTOCOL_ERROR)
            return False
        return not self.closed

    def lost(self) -> None:
        """The connection is over (either side ended it): so is the session."""
        self.close()
        session = self.session
        if session is not None:
            session.close(wait=False, abort=True, reason=session.server.reason.TRANSPORT_CLOSE)

    def close(self, code: int = 1000) -> None:
        if not self.closed:
            self.closed = True
            self.ws.close(code)
            # The peer answers the close frame and the reader ends; one that never does (gone
            # without a FIN) is cut off after a grace, so its reader does not wait forever.
            gevent.spawn_later(CLOSE_GRACE_S, self.ws.stop_reading)

    def join(self) -> None:
        """Wait (a bounded time) until what was written has been handed to the kernel."""
        self.ws.flushed(5.0)

    def empty(self) -> bool:
        return True


class Pinger:
    """Engine.IO's heartbeat for every session of a server, from one greenlet.

    A session gets a PING `interval_s` after it opened or after its last PONG; a PONG must come
    within `timeout_s` of the PING, or the session is closed (`close(reason=...)`, in a greenlet
    of its own, since closing runs the application's disconnect handlers). The greenlet sleeps
    until the earliest deadline, so every session is pinged on time, whenever it was created.

    The heap holds sessions weakly, and entries of closed sessions are swept out once they are
    the majority: a closed session is released at once, not when its next PING would have been due.
    """

    PING = 0
    TIMEOUT = 1

    def __init__(self, interval_s: float, timeout_s: float, timeout_reason: str,
                 spawn: Callable[..., Any] = gevent.spawn):
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.timeout_reason = timeout_reason
        self.spawn = spawn
        self._due: list[tuple[float, int, Any, int, int]] = []
        self._stale = 0  # entries of stopped sessions still in the heap
        self._order = itertools.count()
        self._wake = Event()
        self._task: Any = None
        self._ping = eio_packet.Packet(eio_packet.PING)  # one packet (and frame) for every session

    def start(self, session: Any) -> None:
        """Begin the heartbeat of a session that has just opened."""
        session.awaiting_pong = False
        self._push(session, self.interval_s, self.PING)

    def pong(self, session: Any) -> None:
        """A PONG arrived: the next PING goes out one interval from now (an unasked PONG changes nothing)."""
        if session.awaiting_pong:
            session.awaiting_pong = False
            self._push(session, self.interval_s, self.PING)

    def stop(self, session: Any) -> None:
        """Forget a session's pending PING or deadline."""
        session.heartbeat += 1
        self._stale += 1
        if self._stale > 256 and self._stale * 2 > len(self._due):
            self._sweep()

    def _sweep(self) -> None:
        live = []
        for entry in self._due:
            session = entry[2]()
            if session is not None and session.heartbeat == entry[3] and not session.closed:
                live.append(entry)
        heapq.heapify(live)
        self._due = live
        self._stale = 0

    def pending(self) -> int:
        """Entries waiting in the heap (closed sessions' included, until they come up)."""
        return len(self._due)

    def _push(self, session: Any, delay: float, kind: int) -> None:
        session.heartbeat += 1
        entry = (time.monotonic() + delay, next(self._order), weakref.ref(session), session.heartbeat, kind)
        heapq.heappush(self._due, entry)
        if self._task is None:
            self._task = gevent.spawn(self._run)
        elif self._due[0] is entry:
            self._wake.set()  # earlier than what the greenlet sleeps towards

    def _run(self) -> None:
        while True:
            self._wake.clear()
            now = time.monotonic()
            while self._due and self._due[0][0] <= now:
                _, _, ref, generation, kind = heapq.heappop(self._due)
                session = ref()
                if session is None or generation != session.heartbeat or session.closing or session.closed:
                    continue
                try:
                    self._fire(session, kind)
                except Exception as exc:  # one bad session never stops the heartbeats of the rest
                    log.warning("heartbeat of a session failed: %s", type(exc).__name__)
            self._wake.wait(self._due[0][0] - time.monotonic() if self._due else None)

    def _fire(self, session: Any, kind: int) -> None:
        if kind == self.PING:
            session.awaiting_pong = True
            session.send(self._ping)
            self._push(session, self.timeout_s, self.TIMEOUT)
        else:
            self.stop(session)
            session.timed_out = True  # a request arriving before the close has run is refused now
            self.spawn(session.close, wait=False, abort=False, reason=self.timeout_reason)


def run_websocket(session: Any, ws: Any) -> None:
    """Serve one Engine.IO session over a WebSocket until either side ends it.

    A session that is already open on long-polling is upgraded first (`2probe`, `3probe`, `5`).
    Then the event loop watches the connection and this returns; a connection it cannot watch is
    read here until it ends.
    """
    limit = session.max_payload

    def receive() -> Any:
        data = ws.receive()
        if data is not None and len(data) > limit:
            raise ValueError("packet is too large")
        return data

    # No socket timeout (gevent would arm a timer for every read): a peer that went silent is found
    # by the Pinger's timeout, which closes the session; DirectOutput.close then ends the reader.
    output = DirectOutput(ws, session)
    if session.connected:
        if not _upgrade(session, ws, receive, output):
            return
    else:
        session.attach(output)
    if ws.watch(output):
        return

    try:
        while not output.closed:
            data = ws.receive()
            if data is None:
                break
            ws.cork()
            try:
                going_on = output.received(data)
            finally:
                ws.uncork()
            if not going_on:
                break
    except Exception:
        log.exception("reading a WebSocket failed; closing it")
    finally:
        output.lost()


def _upgrade(session: Any, ws: Any, receive: Callable[[], Any], output: DirectOutput) -> bool:
    """The probe exchange that moves a long-polling session onto this WebSocket; False if it failed."""
    if not session.begin_upgrade():
        log.info("refused a WebSocket for a session that is upgrading or upgraded already")
        ws.close(PROTOCOL_ERROR, b"session upgraded already")
        return False
    try:
        with gevent.Timeout(UPGRADE_TIMEOUT_S, TimeoutError("the upgrade took too long")):
            if receive() != "2probe":
                raise ValueError("no probe")
            ws.send("3probe")
            session.probed()  # the waiting GET ends with a NOOP
            if receive() != "5":
                raise ValueError("no UPGRADE packet after the probe")
    except Exception as exc:  # the session goes on over long-polling
        session.abort_upgrade()
        log.info("WebSocket upgrade failed (%s)", exc if isinstance(exc, (ValueError, TimeoutError)) else type(exc).__name__)
        ws.close(PROTOCOL_ERROR, b"upgrade failed")
        return False
    if session.closed:  # closed meanwhile (a ping timeout, the application): nothing to move over
        ws.close()
        return False
    session.attach(output)
    return True
