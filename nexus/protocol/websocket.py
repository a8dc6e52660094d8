"""Nexus's engine.io WebSocket transport: the per-connection machinery, made lean.

python-engineio runs each WebSocket with three greenlets (a reader, a writer fed through a queue,
and a ping timer) and re-encodes a broadcast packet for every recipient. Here, through the
server's own extension points (its per-instance table of async drivers and its background-task
entry), each connection keeps one greenlet, its reader:

- packets are written straight to the socket by whoever sends them, through the connection's
  `DirectOutput` (which stands in for engine.io's outgoing queue), and a packet's WebSocket frame
  is built once however many sockets it goes to (python-socketio hands the same packet object to
  every member of a room);
- one `Pinger` per server sends engine.io's heartbeats for every connection, instead of a
  sleeping greenlet per connection.

Long-polling is engine.io's own, unchanged, as is everything an engine.io socket decides (ping
timeouts, close, the upgrade handshake). tests/protocol/test_websocket.py and the live tests fail
if a python-engineio release moves these entry points.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import time
from typing import Any

import gevent
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.socket import Socket as EngineSocket
from geventwebsocket.exceptions import WebSocketError

from nexus.server import frame_header

log = logging.getLogger("nexus.transport")

_FRAME = "_nexus_frame"
CLOSE_GRACE_S = 5.0


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
    """An engine.io socket's outgoing queue, once it is on WebSocket: `put` writes the frame."""

    def __init__(self, ws: Any):
        self.ws = ws
        self.closed = False

    def put(self, pkt: Any, block: bool = True, timeout: float | None = None) -> None:
        if pkt is None:  # engine.io's signal that the socket is closing
            self.close()
            return
        if self.closed:
            return
        try:
            self.ws.write(frame_of(pkt))
        except WebSocketError:
            self.closed = True  # the reader sees the connection end and closes the session

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.ws.close()
            # The peer answers the close frame and the reader ends; one that never does (gone
            # without a FIN) is cut off after a grace, so its reader does not wait forever.
            gevent.spawn_later(CLOSE_GRACE_S, self.ws.stop_reading)

    # The rest of the queue interface engine.io may call on a WebSocket session.
    def join(self) -> None:
        self.ws.flushed(5.0)

    def empty(self) -> bool:
        return True

    def qsize(self) -> int:
        return 0

    def task_done(self) -> None:
        pass

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        raise eio_exceptions.QueueEmpty()

    get_nowait = get


class Pinger:
    """Sends engine.io's PING to every WebSocket and polling session when it is due, from one greenlet."""

    TICK_S = 0.25

    def __init__(self, server: Any):
        self.server = server
        self._due: list[tuple[float, int, Any]] = []
        self._order = itertools.count()
        self._task: Any = None

    def schedule(self, sock: Any) -> None:
        """What engine.io's Socket._send_ping does in a greenlet of its own: ping after the interval."""
        heapq.heappush(self._due, (time.monotonic() + self.server.ping_interval, next(self._order), sock))
        if self._task is None:
            self._task = gevent.spawn(self._run)

    def _run(self) -> None:
        ping = eio_packet.Packet(eio_packet.PING)
        while True:
            gevent.sleep(self.TICK_S)
            now = time.monotonic()
            while self._due and self._due[0][0] <= now:
                _, _, sock = heapq.heappop(self._due)
                if sock.closing or sock.closed:
                    continue
                sock.last_ping = time.time()
                try:
                    sock.send(ping)
                except Exception as exc:  # one bad socket never stops the heartbeats of the rest
                    log.debug("ping failed: %s", type(exc).__name__)


class NexusWebSocketWSGI:
    """engine.io's 'websocket' driver slot: runs a WebSocket session with one greenlet."""

    def __init__(self, handler: Any, server: Any):
        self.handler = handler
        self.server = server

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        ws = environ.get("wsgi.websocket")
        if ws is None:
            raise RuntimeError("WebSockets need Nexus's server (nexus serve or the Procfile's worker)")
        sock = getattr(self.handler, "__self__", None)
        if not isinstance(sock, EngineSocket) or not hasattr(ws, "write"):
            raise RuntimeError("python-engineio's WebSocket entry point changed; see nexus/protocol/websocket.py")
        run_websocket(sock, ws)
        return []


def run_websocket(sock: Any, ws: Any) -> None:
    """engine.io's WebSocket session (Socket._websocket_handler), writing through DirectOutput."""
    server = sock.server
    limit = server.max_http_buffer_size

    def receive() -> Any:
        data = ws.receive()
        if data and len(data) > limit:
            raise ValueError("packet is too large")
        return data

    # No socket timeout (gevent would arm a timer for every read): a peer that went silent is found
    # by engine.io's ping timeout, which closes the session; DirectOutput.close then ends this reader.
    if sock.connected:  # an upgrade from long-polling: the probe handshake first
        sock.upgrading = True
        pkt = eio_packet.Packet(encoded_packet=receive())
        if pkt.packet_type != eio_packet.PING or pkt.data != "probe":
            sock.upgrading = False
            return
        ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
        sock.queue.put(eio_packet.Packet(eio_packet.NOOP))  # ends the pending poll
        pkt = eio_packet.Packet(encoded_packet=receive())
        if pkt.packet_type != eio_packet.UPGRADE:
            sock.upgraded = False
            sock.upgrading = False
            return
        sock.upgraded = True
        sock.upgrading = False
    else:
        sock.connected = True
        sock.upgraded = True

    output = DirectOutput(ws)
    waiting = sock.queue
    sock.queue = output  # from here on, sends write to the socket
    pending = None
    while True:  # what was queued before, in order (no greenlet switch happens in this loop)
        try:
            pending = waiting.get_nowait()
        except Exception:
            break
        waiting.task_done()
        output.put(pending)
    del waiting, pending  # the old queue is not kept for the life of the connection

    try:
        while not output.closed:
            try:
                data = receive()
            except Exception as exc:
                if not sock.closed:
                    log.info("WebSocket ended (%s)", type(exc).__name__)
                break
            if data is None:
                break
            # A frame that is not an engine.io packet raises ValueError here, out of this loop:
            # NexusHandler logs one line and closes the connection (as with engine.io's own loop).
            try:
                sock.receive(eio_packet.Packet(encoded_packet=data))
            except eio_exceptions.UnknownPacketError:
                pass
            except eio_exceptions.SocketIsClosedError:
                break
    finally:
        output.close()
        sock.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)


def install(server: Any) -> None:
    """Give a python-socketio server's engine.io this transport and the shared pinger."""
    eio = server.eio
    if eio.async_mode != "gevent":
        return  # the threading test servers keep engine.io's own transport
    drivers = dict(eio._async)  # the module's table is shared by every engine.io server: copy it
    drivers["websocket"] = NexusWebSocketWSGI
    eio._async = drivers
    pinger = Pinger(eio)
    eio.nexus_pinger = pinger
    start = eio.start_background_task

    def start_background_task(target: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(target, "__func__", None) is EngineSocket._send_ping:
            pinger.schedule(target.__self__)
            return None
        return start(target, *args, **kwargs)

    eio.start_background_task = start_background_task
