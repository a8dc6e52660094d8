"""Serving Nexus: gevent's WSGI server with WebSocket support, standalone or under gunicorn."""
from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import logging
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any

import _socket
import gevent
import geventwebsocket.handler
from gevent import pywsgi
from gevent.pool import Group, Pool
from gevent.socket import socket as _GeventSocket
from geventwebsocket.exceptions import ProtocolError, WebSocketError
from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
from gunicorn.workers.ggevent import PyWSGIServer
from geventwebsocket.handler import WebSocketHandler
from geventwebsocket.websocket import Header, WebSocket

from nexus import access
from nexus.logs import CLIENT_MISTAKES, log_event, redact

access_log = logging.getLogger("nexus.access")
server_log = logging.getLogger("nexus.server")


DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009

#: Frames a WebSocket's reader handles in a row before it lets every other connection of the
#: worker have a turn (a client that floods small frames never has to wait on its socket).
FRAMES_PER_TURN = 16
#: How the reader lets the others have their turn when more of its frames are waiting: a timer,
#: so that the event loop polls every socket before the reader goes on (gevent runs callbacks
#: queued by sleep(0) about 50 at a time before it polls, so sleep(0) would still hold every other
#: connection back for ~100 ms). A reader with nothing waiting goes on: its next read waits anyway.
TURN_PAUSE_S = 0.0001
#: How long a watched WebSocket's reader waits for the next frame once it has handled every one
#: that came, before it ends and leaves the connection to its watcher. A client in a conversation
#: (an ack, then its next event) finds the reader still there: a greenlet started and ended and the
#: watcher stopped and started again for every frame cost more than the event itself.
READER_LINGER_S = 0.05
#: How long a watched WebSocket that is over may take to hand its last frames to the client (what
#: waited behind a slow reader, then the close frame) and to read what the client still sends,
#: before its socket is closed regardless (`LimitedWebSocket._close_gently`).
CLOSE_FLUSH_S = 5.0


class MessageTooBig(Exception):
    """A WebSocket message longer than the configured maximum."""


class FrameBudgetExceeded(Exception):
    """A WebSocket that sends frames faster than its budget allows, past its burst."""


class _ReadElsewhere:
    """Stands in for a WebSocket's HTTP read buffer once its frames are read from the socket."""

    closed = True

    def close(self) -> None:
        pass


_READ_ELSEWHERE = _ReadElsewhere()
_NO_BODY = io.BytesIO(b"")


#: Bytes written to a WebSocket that its peer has not taken yet, beyond which the connection is
#: dropped (a client that stopped reading must not grow the server's memory without a bound);
#: NEXUS_MAX_BACKLOG_BYTES sets it.
MAX_BACKLOG_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class EdgeLimits:
    """What a connection may do before the application sees it (the defaults are nexus.config's)."""

    header_timeout_s: float = 30.0
    keepalive_timeout_s: float = 75.0
    max_connections_per_address: int = 1000
    trusted_proxies: int = 0
    frame_rate: float = 2000.0
    frame_burst: float = 10_000.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_backlog_bytes: int = MAX_BACKLOG_BYTES
    socketio_path: str = "/socket.io/"

    @classmethod
    def of(cls, application: Any) -> "EdgeLimits":
        """The limits of a Nexus app's settings; the defaults for any other WSGI application."""
        config = getattr(application, "config", None)
        settings = config.get("NEXUS") if isinstance(config, dict) else None
        if settings is None:
            return cls()
        middleware = getattr(getattr(application, "extensions", {}).get("socketio"), "sockio_mw", None)
        path = getattr(middleware, "engineio_path", None) or cls.socketio_path
        return cls(
            header_timeout_s=float(settings.header_timeout_s),
            keepalive_timeout_s=float(settings.keepalive_timeout_s),
            max_connections_per_address=settings.max_connections_per_address,
            trusted_proxies=settings.trusted_proxies,
            frame_rate=float(settings.websocket_frame_rate),
            frame_burst=float(settings.websocket_frame_burst),
            max_message_bytes=settings.max_payload_bytes,
            max_backlog_bytes=settings.max_backlog_bytes,
            socketio_path=path if path.endswith("/") else path + "/",
        )


def edge_limits(handler: Any) -> EdgeLimits:
    """The limits of the server a handler belongs to (read from its application once per server)."""
    server = getattr(handler, "server", None)
    limits = getattr(server, "nexus_limits", None)
    if limits is None:
        application = getattr(server, "application", None) or getattr(handler, "application", None)
        limits = EdgeLimits.of(application)
        if server is not None:
            server.nexus_limits = limits
    return limits


def frame_header(length: int, opcode: int = 0x1) -> bytes:
    """The header of an unmasked, final server frame (RFC 6455 section 5.2)."""
    if length < 126:
        return bytes((0x80 | opcode, length))
    if length < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, length)
    return struct.pack("!BBQ", 0x80 | opcode, 127, length)


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR a client frame's payload with its 4-byte mask, as whole integers (not byte by byte)."""
    length = len(payload)
    key = (mask * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(length, "little")


class LimitedWebSocket(WebSocket):
    """gevent-websocket's WebSocket with Nexus's reading and writing.

    Reading: a size limit checked on each frame header, before its payload is read (a huge frame
    is refused without buffering it; messages split over continuation frames count as a whole);
    compression is never negotiated, so a compressed (RSV1) frame is a protocol error and is never
    inflated, and an unmasked client frame closes the connection with 1002 (RFC 6455 section 5.1);
    masks are removed with integer arithmetic and text is checked by one strict UTF-8 decode
    (gevent-websocket does both in Python, byte by byte, which cost more than the event).

    Watched reading (`watch`): once its session is established, the connection leaves the greenlet
    of the HTTP request that opened it. The event loop watches its socket, and when bytes arrive a
    greenlet starts that reads and hands over every complete message waiting, then ends; an idle
    WebSocket holds no greenlet, no HTTP request and no WSGI environ. A frame that arrives in
    pieces keeps that greenlet waiting for the rest, as the reading greenlet of every connection
    did before. A connection the loop cannot watch (TLS) is read by the greenlet that opened it.

    Fairness: the reader handles at most FRAMES_PER_TURN frames before it yields to the other
    connections, and every frame (control frames too) is taken from a token bucket refilled at
    NEXUS_WS_FRAME_RATE per second up to NEXUS_WS_FRAME_BURST: a client that keeps sending past it
    is closed with 1008.

    Writing: a frame goes straight to the socket with one non-blocking send from whichever
    greenlet emits it (a room broadcast writes to every member without switching greenlets);
    what the kernel does not take waits, in order, in a backlog flushed by a greenlet that exists
    only while there is one. A peer whose backlog passes NEXUS_MAX_BACKLOG_BYTES is disconnected.
    While the reader hands a message over it corks the connection (`cork`): what the handlers
    write to it (an ack, then an event) goes out in one send once the message is handled; writes
    from other greenlets meanwhile go out at once, after what the cork held.
    """

    __slots__ = ("max_message_bytes", "max_backlog_bytes", "frame_rate", "frame_burst", "_message_bytes",
                 "_socket", "_raw", "_backlog", "_backlog_bytes", "_flusher", "_rbuf", "_tokens", "_refilled",
                 "_turn", "_watcher", "_consumer", "_cork", "_corker", "_pool", "_peer_address", "counted_address")

    #: Read by OpenConnections.begin_drain: a WebSocket never waits for an HTTP request.
    waiting_for_request = False

    def __init__(self, environ: Any, stream: Any, handler: Any):
        super().__init__(environ, stream, handler)
        self.utf8validator = None  # text is checked by the strict decode that makes it a str
        limits = edge_limits(handler)
        self.max_message_bytes = limits.max_message_bytes
        self.max_backlog_bytes = limits.max_backlog_bytes
        self.frame_rate = limits.frame_rate
        self.frame_burst = limits.frame_burst
        self._tokens = limits.frame_burst
        self._refilled = time.monotonic()
        self._turn = FRAMES_PER_TURN
        self._message_bytes = 0
        self._socket = handler.socket  # gevent's socket: blocking sends park only the calling greenlet
        # The non-blocking OS socket beneath gevent's, written to directly; never beneath TLS (gevent's
        # SSLSocket is a subclass holding the TCP socket there): TLS records go through the flusher.
        self._raw = handler.socket._sock if type(handler.socket) is _GeventSocket else None
        self._backlog: deque[Any] | None = None  # made when the kernel first refuses a write
        self._backlog_bytes = 0
        self._flusher: Any = None
        self._watcher: Any = None  # the event loop's read watcher, once watched
        self._consumer: Any = None  # what watched reading hands messages to
        self._cork: list[bytes] | None = None
        self._corker: Any = None
        self._pool: Any = None
        self._peer_address: str | None = None
        self.counted_address: str | None = None  # the address OpenConnections counts it against, once watched
        self._rbuf = bytearray(self._take_over_reading(handler))
        self.raw_read = stream.read = None  # bound to the released buffer; frames come from _fill

    # -- reading ----------------------------------------------------------------------

    @staticmethod
    def _take_over_reading(handler: Any) -> bytes:
        """Read frames from the socket itself from now on, and let go of the HTTP request's 8 KiB
        read buffer (every idle connection kept one). Returns what that buffer already held, read
        without blocking (nothing, from a client that waits for the 101 as it must)."""
        rfile = getattr(handler, "rfile", None)
        if rfile is None or getattr(handler, "socket", None) is None:
            return b""
        held = b""
        timeout = handler.socket.gettimeout()
        try:
            handler.socket.settimeout(0.0)
            held = rfile.read1(65536) or b""
        except OSError:
            pass
        finally:
            handler.socket.settimeout(timeout)
        handler.rfile = _READ_ELSEWHERE
        handler.headers = None  # parsed into the environ already
        environ = getattr(handler, "environ", None)
        if environ is not None and environ.get("wsgi.input") is rfile:
            environ["wsgi.input"] = _NO_BODY  # python-socketio keeps the environ for the connection's life
        wsgi_input = getattr(handler, "wsgi_input", None)
        if wsgi_input is not None and not (wsgi_input.content_length or wsgi_input.chunked_input):
            wsgi_input.rfile = None  # a GET: nothing of its body is left to discard
        return held

    def _fill(self, size: int) -> bytearray:
        """The read buffer, holding at least `size` bytes (blocking this greenlet until they came)."""
        buffer = self._rbuf
        while len(buffer) < size:
            wanted = max(65536, size - len(buffer))
            chunk = self._socket.recv(wanted) if self._socket is not None else self._recv_when_readable(wanted)
            if not chunk:
                raise WebSocketError("Unexpected EOF")
            buffer += chunk
        return buffer

    def _recv_when_readable(self, size: int) -> bytes:
        """A read from a watched socket, waiting on its watcher while nothing is there."""
        raw = self._raw
        while True:
            try:
                return raw.recv(size)
            except BlockingIOError:
                watcher = self._watcher
                if watcher is None:
                    raise WebSocketError("Socket is dead") from None
                gevent.get_hub().wait(watcher)

    def _pull(self) -> bool:
        """Whether bytes wait on a watched socket (what is there is read into the buffer, without
        blocking). The end of the stream or an error counts: the next read reports it."""
        try:
            chunk = self._raw.recv(65536)
        except BlockingIOError:
            return False
        except OSError:
            return True
        if chunk:
            self._rbuf += chunk
        return True

    def _count_frame(self, length: int) -> None:
        """Take a frame from the connection's budget, and from its turn (a long frame takes one
        frame more per 64 KiB)."""
        now = time.monotonic()
        tokens = min(self.frame_burst, self._tokens + (now - self._refilled) * self.frame_rate) - 1
        self._tokens, self._refilled = tokens, now
        if tokens < 0:
            raise FrameBudgetExceeded(f"more than {self.frame_burst:.0f} frames at once, then more than "
                                      f"{self.frame_rate:.0f} a second")
        self._turn -= 1 + (length >> 16)

    def _end_turn(self) -> None:
        """Once the connection has had its turn, let the others have theirs if more of its frames
        are waiting (in the buffer or in the kernel): a flood never has to wait on its socket."""
        self._turn = FRAMES_PER_TURN
        waiting = bool(self._rbuf)
        if not waiting and self._raw is not None:
            try:
                waiting = bool(self._raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
            except OSError:  # nothing there (EAGAIN), or the connection is gone: the next read says
                waiting = False
        if waiting:
            gevent.sleep(TURN_PAUSE_S)

    def read_frame(self) -> Any:
        buffer = self._fill(2)
        first, second = buffer[0], buffer[1]
        if not second & 0x80:
            raise ProtocolError("unmasked client frame")
        header = Header(fin=first & 0x80 == 0x80, opcode=first & 0x0F, flags=first & 0x70, length=second & 0x7F)
        offset = 2
        if header.opcode > 0x07:
            if not header.fin:
                raise ProtocolError("fragmented control frame")
            if header.length > 125:
                raise ProtocolError("control frame longer than 125 bytes")
        if header.length == 126:
            header.length = struct.unpack_from("!H", self._fill(4), 2)[0]
            offset = 4
        elif header.length == 127:
            header.length = struct.unpack_from("!Q", self._fill(10), 2)[0]
            offset = 10
        header.mask = bytes(self._fill(offset + 4)[offset:offset + 4])
        offset += 4
        if header.opcode in (self.OPCODE_TEXT, self.OPCODE_BINARY):
            self._message_bytes = 0
        if header.opcode in (self.OPCODE_TEXT, self.OPCODE_BINARY, self.OPCODE_CONTINUATION):
            self._message_bytes += header.length
            if self._message_bytes > self.max_message_bytes:  # refused before its payload is read
                raise MessageTooBig(f"message of more than {self.max_message_bytes} bytes")
        if header.flags:
            raise ProtocolError("reserved bits set (compression is not enabled)")
        self._count_frame(header.length)
        end = offset + header.length
        buffer = self._fill(end)
        payload = bytes(buffer[offset:end])
        if len(buffer) == end:
            self._rbuf = bytearray()  # an idle connection keeps no buffer
        else:
            del buffer[:end]
        if self._turn <= 0:
            self._end_turn()
        return header, unmask(payload, header.mask)

    def read_message(self) -> Any:
        """The next text (a str) or binary (bytes) message; None once a close frame came.
        Pings are answered and pongs skipped on the way."""
        opcode = 0
        parts: list[bytes] = []
        while True:
            header, payload = self.read_frame()
            kind = header.opcode
            if kind in (self.OPCODE_TEXT, self.OPCODE_BINARY):
                if opcode:
                    raise ProtocolError("a new message began inside a fragmented one")
                opcode = kind
            elif kind == self.OPCODE_CONTINUATION:
                if not opcode:
                    raise ProtocolError("a continuation frame outside a message")
            elif kind == self.OPCODE_PING:
                self.handle_ping(header, payload)
                continue
            elif kind == self.OPCODE_PONG:
                continue
            elif kind == self.OPCODE_CLOSE:
                self.handle_close(header, payload)
                return None
            else:
                raise ProtocolError(f"unknown opcode {kind:#x}")
            parts.append(payload)
            if header.fin:
                break
        message = parts[0] if len(parts) == 1 else b"".join(parts)
        if opcode == self.OPCODE_TEXT:
            try:
                return message.decode("utf-8")
            except UnicodeDecodeError:
                raise UnicodeError("text message that is not UTF-8") from None
        return message

    def receive(self) -> Any:
        """The next message; None once the connection is over (closed by either side, or closed
        here because the client broke a limit or the protocol)."""
        if self.closed:
            return None
        try:
            return self.read_message()
        except MessageTooBig as exc:
            CLIENT_MISTAKES.report(server_log, "message_too_big", f"closed a WebSocket: {exc}")
            self.close(CLOSE_TOO_BIG, b"message too big")
        except FrameBudgetExceeded as exc:
            CLIENT_MISTAKES.report(server_log, "websocket_flood",
                                   f"closed a WebSocket from {self._peer()} that sent frames too fast ({exc})")
            self.close(CLOSE_POLICY_VIOLATION, b"too many frames")
        except UnicodeError:
            self.close(1007)
        except ProtocolError as exc:
            CLIENT_MISTAKES.report(server_log, "websocket_protocol_error",
                                   f"closed a WebSocket from {self._peer()} with {CLOSE_PROTOCOL_ERROR}: {exc}")
            self.close(CLOSE_PROTOCOL_ERROR)
        except OSError:  # the end of the stream, a reset, a socket closed under the reader
            self.close()
        return None

    def _peer(self) -> str:
        if self._peer_address is not None:
            return self._peer_address
        environ = self.environ or {}
        return str(environ.get("REMOTE_ADDR") or "an unknown address")

    # -- watched reading --------------------------------------------------------------

    def watch(self, consumer: Any) -> bool:
        """Let the event loop watch this connection from now on, and hand every message that
        arrives to `consumer.received(message)` (which returns False once the session is over);
        `consumer.lost()` is called once when the connection ends, before its socket is closed.

        The socket leaves the HTTP handler, which then returns without closing it (the server's
        connection count, OpenConnections and a ConnectionPool, keep counting it). False, with
        nothing changed, for a connection the loop cannot watch: its caller reads it instead."""
        handler = self.handler
        sock = getattr(handler, "socket", None)
        wsgi_input = getattr(handler, "wsgi_input", None)
        if (self.closed or type(sock) is not _GeventSocket or self._backlog or self._flusher is not None
                or self._cork is not None or getattr(wsgi_input, "rfile", None) is not None):
            return False  # TLS, a body still to read, or writes in flight on the handler's socket
        self._peer_address = self._peer()
        raw = _socket.socket(fileno=sock.detach())  # the server's socket object no longer closes it
        raw.setblocking(False)
        self._raw = raw
        self._socket = None
        handler.socket = None  # the handler neither drains nor closes it when it returns
        self.handler = self.stream = self.environ = None
        self._consumer = consumer
        CONNECTIONS.hand_over(handler, self)
        pool = getattr(getattr(handler, "server", None), "pool", None)
        if isinstance(pool, ConnectionPool) and pool.hand_over(gevent.getcurrent()):
            self._pool = pool
        self._watcher = gevent.get_hub().loop.io(raw.fileno(), 1)
        if self._rbuf:
            gevent.spawn(self._read_ready)  # frames came with the last ones the handler read
        else:
            self._watcher.start(self._on_readable)
        return True

    def _on_readable(self) -> None:
        """In the event loop: bytes (or the end) arrived on an idle watched connection."""
        self._watcher.stop()  # one reader at a time: the watcher rests until it is done
        gevent.spawn(self._read_ready)

    def _read_ready(self) -> None:
        """Read and hand over every message waiting, then rest (the watcher re-armed), or end the
        connection if it is over."""
        consumer = self._consumer
        idle = False
        lingered = False
        try:
            while consumer is not None and not self.closed:
                if not self._rbuf and not self._pull():
                    if lingered or not self._linger():
                        idle = True
                        break
                    lingered = True  # if the wait brings no frame, the watcher has the connection
                    continue
                lingered = False
                message = self.receive()
                if message is None:
                    break
                self.cork()
                try:
                    going_on = consumer.received(message)
                finally:
                    self.uncork()
                if not going_on:
                    break
        except Exception:
            server_log.exception("reading a WebSocket failed; closing it")
        finally:
            watcher = self._watcher
            if idle and watcher is not None:
                watcher.start(self._on_readable)
            else:
                self._finish()

    def _linger(self) -> bool:
        """Wait up to READER_LINGER_S for bytes on the watched socket; whether they came (or the
        connection ended: the next read says which)."""
        watcher = self._watcher
        if watcher is None:
            return False
        timeout = gevent.Timeout._start_new_or_dummy(READER_LINGER_S)
        try:
            gevent.get_hub().wait(watcher)
            return True
        except gevent.Timeout as exc:
            if exc is not timeout:
                raise
            return False
        finally:
            timeout.close()

    def _finish(self) -> None:
        """A watched connection is over: its consumer hears of it, then the socket is closed and forgotten."""
        watcher, self._watcher = self._watcher, None
        if watcher is None:
            return
        watcher.stop()
        watcher.close()
        consumer, self._consumer = self._consumer, None
        try:
            if consumer is not None:
                consumer.lost()
        finally:
            self.closed = True
            self._cork = self._corker = None
            raw = self._raw
            try:
                self._close_gently(raw)
            finally:
                flusher = self._flusher
                if flusher is not None:
                    flusher.kill()  # its write watcher is closed before the socket is
                raw.close()
            CONNECTIONS.discard(self)
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.handed_over_ended()

    def _close_gently(self, raw: Any) -> None:
        """Before a watched connection's socket closes: what still waits in the backlog (events a
        slow reader had not taken yet, the DISCONNECT packet, the close frame) goes out, then the
        end of the stream, while what the client still sends is read and dropped until it closes
        its side. Closing over unread bytes would make the kernel reset the connection, and a reset
        destroys what the client had received but not read yet. At most CLOSE_FLUSH_S; a connection
        cut under its reader (a drain's end, a dropped slow reader) ends at once."""
        deadline = time.monotonic() + CLOSE_FLUSH_S
        dropping = gevent.spawn(self._drop_incoming, raw)
        try:
            flusher = self._flusher
            if flusher is not None:
                flusher.join(CLOSE_FLUSH_S)
            if self._backlog:
                return  # not taken in time: closed as it is
            try:
                raw.shutdown(socket.SHUT_WR)
            except OSError:
                return
            dropping.join(max(0.0, deadline - time.monotonic()))
        finally:
            dropping.kill()

    def close_gently_here(self) -> None:
        """`_close_gently` for a connection its handler's greenlet reads (TLS), before the handler
        returns and its socket closes: what waits goes out, then the end of the stream (TCP's: the
        TLS session ends there), then what the client still sends is read and dropped until it
        closes its side, at most CLOSE_FLUSH_S in all."""
        sock = self._socket
        deadline = time.monotonic() + CLOSE_FLUSH_S
        if sock is None or not self.flushed(CLOSE_FLUSH_S):
            return
        try:
            sock.shutdown(socket.SHUT_WR)  # an SSL socket reads the raw stream from then on: dropped anyway
            with gevent.Timeout(max(0.0, deadline - time.monotonic()), False):
                while sock.recv(65536):
                    pass
        except OSError:
            pass

    @staticmethod
    def _drop_incoming(raw: Any) -> None:
        """Read and drop what arrives on `raw` until the client closes its side (or it fails)."""
        watcher = gevent.get_hub().loop.io(raw.fileno(), 1)
        try:
            while True:
                try:
                    if not raw.recv(65536):
                        return
                except BlockingIOError:
                    gevent.get_hub().wait(watcher)
                except OSError:
                    return
        finally:
            watcher.close()

    def cut(self, both_ways: bool = False) -> None:
        """End this connection under its reader: its next read sees the end of the stream."""
        try:
            self._raw.shutdown(socket.SHUT_RDWR if both_ways else socket.SHUT_RD)
        except (OSError, AttributeError):
            pass

    def stop_reading(self) -> None:
        """Wake a reader still waiting on a connection that is over."""
        self.cut()

    def _abort(self) -> None:
        # Shut the connection down under the reader, which then ends the session as a lost transport.
        self.cut(both_ways=True)

    # -- writing ----------------------------------------------------------------------

    def send_frame(self, message: Any, opcode: int) -> None:
        if self.closed:
            raise WebSocketError("Socket is dead")
        if isinstance(message, str):
            message = message.encode()
        elif not isinstance(message, bytes):
            message = bytes(message or b"")
        self.write(frame_header(len(message), opcode) + message)

    def cork(self) -> None:
        """Hold what this greenlet writes to the connection until `uncork` (then one send for all
        of it). What other greenlets write meanwhile goes out at once, after what is held."""
        self._cork = []
        self._corker = gevent.getcurrent()

    def uncork(self) -> None:
        """Write what the cork held, in one send."""
        held = self._cork
        self._cork = self._corker = None
        if held:
            try:
                self.write(held[0] if len(held) == 1 else b"".join(held))
            except WebSocketError:
                pass  # the connection is gone: its reader sees the end and closes the session

    def write(self, data: bytes) -> None:
        """Write bytes (whole frames) in order, without blocking the caller."""
        held = self._cork
        if held is not None:
            if gevent.getcurrent() is self._corker:
                held.append(data)
                return
            if held:  # another greenlet writes: what is held goes first, in the same send
                data = b"".join(held) + data
                held.clear()
        if self._backlog:
            self._queue(data)
            return
        try:
            sent = self._raw.send(data) if self._raw is not None else 0
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise WebSocketError("Socket is dead") from exc
        if sent < len(data):
            self._queue(memoryview(data)[sent:])

    def _spill(self) -> None:
        """Write what the cork holds now, the cork staying on."""
        held = self._cork
        if held:
            data = b"".join(held)
            held.clear()
            self._cork = None
            try:
                self.write(data)
            finally:
                self._cork = held

    def _queue(self, data: Any) -> None:
        if self._backlog is None:
            self._backlog = deque()
        self._backlog.append(data)
        self._backlog_bytes += len(data)
        if self._backlog_bytes > self.max_backlog_bytes:
            waiting = self._backlog_bytes
            self._backlog.clear()
            self._backlog_bytes = 0
            log_event(server_log, "websocket_dropped", "dropped a WebSocket whose client stopped reading "
                      "({waitingBytes} bytes waiting)", level=logging.WARNING, waitingBytes=waiting)
            self._abort()
            raise WebSocketError("Socket is dead")
        if self._flusher is None:
            self._flusher = gevent.spawn(self._flush)

    def _flush(self) -> None:
        watcher = None
        try:
            while self._backlog:
                chunk = self._backlog[0]  # stays queued while it is written: later writes line up behind it
                if self._socket is not None:
                    self._socket.sendall(chunk)
                else:  # a watched connection: its own write watcher, while there is a backlog
                    try:
                        sent = self._raw.send(chunk)
                    except BlockingIOError:
                        sent = 0
                    if sent < len(chunk):
                        self._backlog[0] = memoryview(chunk)[sent:]
                        self._backlog_bytes -= sent
                        if watcher is None:
                            watcher = gevent.get_hub().loop.io(self._raw.fileno(), 2)
                        gevent.get_hub().wait(watcher)
                        continue
                self._backlog.popleft()
                self._backlog_bytes -= len(chunk)
        except (OSError, ValueError):  # the connection is gone (a closed socket has no descriptor)
            if self._backlog is not None:
                self._backlog.clear()
            self._backlog_bytes = 0
        finally:
            if watcher is not None:
                watcher.close()
            self._flusher = None
            if not self._backlog:
                self._backlog = None

    def flushed(self, timeout: float) -> bool:
        """Wait (at most `timeout` seconds) until everything written has been handed to the kernel."""
        if self._cork and gevent.getcurrent() is self._corker:
            try:
                self._spill()
            except WebSocketError:
                return False
        flusher = self._flusher
        if flusher is not None:
            flusher.join(timeout)
        return not self._backlog

    def close(self, code: int = 1000, message: bytes = b"") -> None:
        """Send a close frame that carries its status code (gevent-websocket's leaves it out), once
        (after what the cork holds, in the same send)."""
        if self.closed:
            return
        try:
            reason = message.encode() if isinstance(message, str) else bytes(message or b"")
            self.send_frame(struct.pack("!H", code) + reason[:123], opcode=self.OPCODE_CLOSE)
            if self._cork and gevent.getcurrent() is self._corker:
                self._spill()
        except (WebSocketError, TypeError):
            pass  # the peer is gone; closing anyway
        finally:
            self.closed = True
            self.stream = None
            self.raw_write = None
            self.raw_read = None
            self.environ = None


# gevent-websocket's handler builds its WebSocket by this module-level name; Nexus's servers
# (nexus serve, the gunicorn worker) use the limited one.
geventwebsocket.handler.WebSocket = LimitedWebSocket


def is_loopback(address: str) -> bool:
    """Whether a client address is the host itself (or not an IP address at all: a Unix socket)."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return True
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def forwarded_for(header: str | None, peer: str, hops: int) -> str:
    """The client's address behind `hops` trusted proxies, read from X-Forwarded-For as
    werkzeug's ProxyFix reads it for the application (the peer's when the header is short)."""
    if not header or hops < 1:
        return peer
    values = [value.strip() for value in header.split(",") if value.strip()]
    return values[-hops] if len(values) >= hops else peer


class OpenConnections:
    """The HTTP connections this process serves, so that a drain can end those nobody is using,
    and how many each client address holds, so that one address cannot take them all.

    A connection *waits* while its handler reads a request: a kept-alive connection between two
    requests, or one whose request has not fully arrived. Otherwise the application has it (a
    REST call, a long-polling GET, a WebSocket). A WebSocket the event loop watches has left its
    handler: it is known by itself from then on (`hand_over`), never waits, and is cut like the
    others. Once draining, every response says `Connection: close` and no connection waits for
    another request.
    """

    def __init__(self) -> None:
        self._handlers: set[Any] = set()
        self._per_address: dict[str, int] = {}
        self.draining = False

    def __len__(self) -> int:
        return len(self._handlers)

    def add(self, handler: Any) -> None:
        self._handlers.add(handler)

    def discard(self, handler: Any) -> None:
        self._handlers.discard(handler)
        self._release(handler)

    def hand_over(self, handler: Any, connection: Any) -> None:
        """`handler`'s connection lives on without it (a WebSocket the event loop watches): known
        as `connection` from now on, counted against the same address. `connection` has
        `waiting_for_request` (False), `counted_address` and `cut(both_ways)`, and is discarded
        when it ends."""
        self._handlers.discard(handler)
        self._handlers.add(connection)
        connection.counted_address = getattr(handler, "counted_address", None)
        handler.counted_address = None

    def held_by(self, address: str) -> int:
        """How many connections `address` holds."""
        return self._per_address.get(address, 0)

    def claim(self, handler: Any, address: str, limit: int) -> bool:
        """Count the handler's connection against `address` (moving it from the address it was
        counted against); False, counting nothing, when the address holds `limit` already.
        Loopback peers are not counted."""
        if getattr(handler, "counted_address", None) == address:
            return True
        if is_loopback(address):
            self._release(handler)
            return True
        held = self._per_address.get(address, 0)
        if held >= limit:
            CLIENT_MISTAKES.report(server_log, "too_many_connections",
                                   f"refused a connection from {address}: it holds {held}, the most one address "
                                   "may (NEXUS_MAX_CONNECTIONS_PER_ADDRESS)")
            return False
        self._release(handler)
        self._per_address[address] = held + 1
        handler.counted_address = address
        return True

    def _release(self, handler: Any) -> None:
        address = getattr(handler, "counted_address", None)
        if address is None:
            return
        handler.counted_address = None
        held = self._per_address.get(address, 0) - 1
        if held > 0:
            self._per_address[address] = held
        else:
            self._per_address.pop(address, None)

    def begin_drain(self) -> int:
        """Stop keeping connections alive, and end those waiting for a request now; how many."""
        self.draining = True
        ended = 0
        for handler in list(self._handlers):
            if handler.waiting_for_request and not handler.request_arriving():
                handler.cut()
                ended += 1
        return ended

    def close_all(self) -> int:
        """Cut every connection still open (the grace is over): their readers see the end at once."""
        self.draining = True
        handlers = list(self._handlers)
        for handler in handlers:
            handler.cut(both_ways=True)
        return len(handlers)


#: The connections of this process's server (`nexus serve` and the gunicorn worker serve one each).
CONNECTIONS = OpenConnections()


class _IdleTooLong(socket.timeout):
    """A kept-alive connection whose next request did not begin within NEXUS_KEEPALIVE_TIMEOUT_S."""


class _HeadersTooSlow(socket.timeout):
    """A request whose line and headers did not arrive within NEXUS_HEADER_TIMEOUT_S."""


class _TooManyConnections(ValueError):
    """A request from an address that holds NEXUS_MAX_CONNECTIONS_PER_ADDRESS connections already."""


def _canned(status: str, body: bytes, *headers: str) -> bytes:
    """A whole HTTP response that closes the connection, for answers given before the application."""
    lines = [f"HTTP/1.1 {status}", "Connection: close", "Content-Type: text/plain; charset=utf-8",
             f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


_BAD_REQUEST = _canned("400 Bad Request", b"Bad request\n")
_HEADERS_TOO_SLOW = _canned("408 Request Timeout", b"The request headers did not arrive in time\n")
_TOO_MANY_CONNECTIONS = _canned("429 Too Many Requests", b"Too many connections from your address\n",
                                "Retry-After: 10")


class NexusHandler(WebSocketHandler):
    """gevent-websocket's handler, logging through `nexus.access` with tokens scrubbed, and known
    to CONNECTIONS for as long as it serves its connection (a WebSocket the event loop goes on
    watching once the handler returns is known to CONNECTIONS by itself).

    At the edge: a request's line and headers must arrive within NEXUS_HEADER_TIMEOUT_S (counted
    from the connection's accept for its first request, from the first byte for later ones), a
    kept-alive connection idle for NEXUS_KEEPALIVE_TIMEOUT_S is closed, an address may hold
    NEXUS_MAX_CONNECTIONS_PER_ADDRESS connections (the peer's address, or the client's behind
    NEXUS_TRUSTED_PROXIES), a malformed request gets 400 with one warning line, and a WebSocket
    upgrade is answered as RFC 6455 section 4.2 asks before the application sees it.
    """

    waiting_for_request = False
    requests_read = 0
    counted_address: str | None = None
    _cut = False
    _header_timer: Any = None

    def handle(self) -> None:
        # Events are small writes (an event, then its ack): without TCP_NODELAY the second
        # waits for the peer's delayed ACK, adding ~40 ms to every round trip.
        try:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not a TCP socket (a Unix socket behind a proxy)
            pass
        limits = edge_limits(self)
        CONNECTIONS.add(self)
        try:
            # Without trusted proxies the peer is the client: counted from the accept, and refused
            # at once (before reading anything), so that refusals never hold a connection slot.
            if not limits.trusted_proxies and not CONNECTIONS.claim(
                self, self.peer_address, limits.max_connections_per_address
            ):
                self._answer_and_close(_TOO_MANY_CONNECTIONS)
                return
            self._arm_header_timer(limits.header_timeout_s)
            super().handle()
        finally:
            self._disarm_header_timer()
            CONNECTIONS.discard(self)

    @property
    def peer_address(self) -> str:
        """The address of the connection's peer (a proxy's, behind one)."""
        address = self.client_address
        return str(address[0]) if isinstance(address, tuple) and address else ""

    def _answer_and_close(self, response: bytes) -> None:
        """Write a whole response and end the connection's sending side (the server then closes it)."""
        sock = self.socket
        try:
            sock.sendall(response)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _arm_header_timer(self, seconds: float) -> None:
        self._disarm_header_timer()
        self._header_timer = gevent.Timeout.start_new(seconds, _HeadersTooSlow("request headers too slow"))

    def _disarm_header_timer(self) -> None:
        timer, self._header_timer = self._header_timer, None
        if timer is not None:
            timer.close()

    def read_requestline(self) -> str:
        if CONNECTIONS.draining and self.requests_read and not self.request_arriving():
            return ""  # no waiting for a next request on a draining instance: the connection ends
        self.waiting_for_request = True
        if self.requests_read:
            limits = edge_limits(self)
            if not self._next_request_begins(limits.keepalive_timeout_s):
                return ""  # idle past the keep-alive timeout, or closed by the client: the connection ends
            self._arm_header_timer(limits.header_timeout_s)
        line = super().read_requestline()
        if not line or len(line) >= pywsgi.MAX_REQUEST_LINE:
            self._disarm_header_timer()  # answered (or closed) without reading headers
        return line

    def _next_request_begins(self, timeout: float) -> bool:
        """Wait (at most `timeout` seconds) for the first byte of a kept-alive connection's next request."""
        try:
            with gevent.Timeout(timeout, _IdleTooLong("idle")):
                return bool(self.rfile.peek(1))
        except _IdleTooLong:
            return False

    def read_request(self, raw_requestline: str) -> Any:
        try:
            parsed = super().read_request(raw_requestline)
            limits = edge_limits(self)
            if limits.trusted_proxies:  # the client is known once its headers are: counted per request
                address = forwarded_for(", ".join(self.headers.get_all("X-Forwarded-For") or ()),
                                        self.peer_address, limits.trusted_proxies)
                if not CONNECTIONS.claim(self, address, limits.max_connections_per_address):
                    raise _TooManyConnections(address)
            return parsed
        finally:
            self._disarm_header_timer()
            self.waiting_for_request = False  # the application has the request from here on
            self.requests_read += 1

    def request_arriving(self) -> bool:
        """Whether bytes of a request wait on the socket (it is served, then the connection closes)."""
        raw = getattr(getattr(self, "socket", None), "_sock", None)
        if raw is None:
            return False
        try:
            return bool(raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:  # nothing there (EAGAIN), or the connection is gone
            return False

    def _handle_client_error(self, ex: BaseException) -> Any:
        """A request that cannot be served as sent: the answer, and one line in the log at most."""
        if self._cut:
            return None  # a request cut short by the drain is not the client's error: just close
        if isinstance(ex, _HeadersTooSlow):
            CLIENT_MISTAKES.report(server_log, "request_timeout",
                                   f"closed a connection from {self.peer_address}: its request headers took longer "
                                   "than NEXUS_HEADER_TIMEOUT_S")
            return ("408", _HEADERS_TOO_SLOW)
        if isinstance(ex, _TooManyConnections):
            return ("429", _TOO_MANY_CONNECTIONS)  # counted and logged by CONNECTIONS.claim
        if isinstance(ex, HTTPException):
            reason = str(ex)  # http.client's: more than 100 headers, a header line over 64 KiB
        else:
            reason = getattr(ex, "formatted_message", None) or str(ex) or type(ex).__name__
        reason = " ".join(reason.split())[:200]  # the client's bytes may be in it: one line, bounded
        CLIENT_MISTAKES.report(server_log, "bad_http_request",
                               f"refused a malformed HTTP request from {self.peer_address}: {reason}")
        return ("400", _BAD_REQUEST)

    def cut(self, both_ways: bool = False) -> None:
        """End this connection under its reader: a pending read sees the end of the stream."""
        self._cut = True
        self.close_connection = True
        sock = getattr(self, "socket", None)
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR if both_ways else socket.SHUT_RD)
        except OSError:
            pass

    def start_response(self, status: str, headers: Any, exc_info: Any = None) -> Any:
        if CONNECTIONS.draining and not status.startswith("101"):
            # The client (a load balancer's connection pool) must not send another request here.
            if not any(name.lower() == "connection" for name, _ in headers):
                headers = [*headers, ("Connection", "close")]
        if status.startswith("101"):  # answered before the application (and its access line) runs
            environ = self.environ
            given = environ.get(access.ENVIRON_KEY) or access.request_id(environ.get("HTTP_X_REQUEST_ID"))
            environ[access.ENVIRON_KEY] = given
            headers = [*headers, ("X-Request-ID", given)]
        return super().start_response(status, headers, exc_info)

    def upgrade_websocket(self) -> Any:
        """Answer a WebSocket upgrade: 101, or the refusal RFC 6455 section 4.2 asks for (a request
        that is not an upgrade goes on to the application)."""
        environ = self.environ
        if environ.get("REQUEST_METHOD") != "GET" or environ.get("HTTP_UPGRADE", "").strip().lower() != "websocket":
            return None
        refusal = self._upgrade_refusal(environ)
        if refusal is not None:
            status, reason, headers = refusal
            CLIENT_MISTAKES.report(server_log, "websocket_upgrade_refused",
                                   f"refused a WebSocket upgrade from {self.peer_address}: {reason}")
            return self._refuse(status, reason, headers)
        # gevent-websocket answers 101 before the application sees the request, so engine.io's
        # origin check would come after the upgrade: refuse a cross-site WebSocket here, with 403.
        extensions = getattr(self.application, "extensions", {})
        allowed = extensions.get("nexus.origin_allowed")
        origin = environ.get("HTTP_ORIGIN")
        if allowed is not None and origin is not None and not allowed(origin, environ):
            server_log.warning("refused a WebSocket from origin %r", origin[:200],
                               extra={"event": "client_error", "fields": {"kind": "origin_refused", "origin": origin[:200]}})
            return self._refuse("403 Forbidden", "Origin not allowed")
        # Engine.IO's own refusals (version, transport, session) are HTTP answers too, not a 101
        # followed by a close.
        refuse_upgrade = extensions.get("nexus.refuse_upgrade")
        if refuse_upgrade is not None:
            answer = refuse_upgrade(environ, self.start_response)
            if answer is not None:
                self.close_connection = True  # what the client sends next may be frames
                return answer
        return super().upgrade_websocket()

    def run_websocket(self) -> None:
        """Run the application on an upgraded connection. gevent-websocket's also lists every
        WebSocket in `server.clients` (nobody reads it) and closes the WebSocket when the
        application returns; a WebSocket the event loop now watches (LimitedWebSocket.watch)
        stays open, and is closed when its session ends."""
        ws = self.websocket
        try:
            for _ in self.application(self.environ, lambda status, headers, exc_info=None: []):
                pass
        finally:
            if ws.handler is self:  # read here to its end (TLS)
                if not ws.closed:
                    ws.close()
                ws.close_gently_here()
            self.environ["wsgi.websocket"] = None
            self.websocket = None

    def _upgrade_refusal(self, environ: dict[str, Any]) -> tuple[str, str, list[tuple[str, str]]] | None:
        """Why an upgrade request cannot be accepted (status, reason, headers); None if it can."""
        tokens = {token.strip().lower() for token in environ.get("HTTP_CONNECTION", "").split(",")}
        if "upgrade" not in tokens:
            return "400 Bad Request", "a WebSocket upgrade needs Connection: Upgrade", []
        if self.request_version in ("HTTP/0.9", "HTTP/1.0"):
            return "400 Bad Request", f"a WebSocket upgrade needs HTTP/1.1, not {self.request_version}", []
        path = environ.get("PATH_INFO") or ""
        socketio_path = edge_limits(self).socketio_path
        if not (path + "/").startswith(socketio_path):
            return "400 Bad Request", f"WebSockets are served on {socketio_path} only", []
        version = environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip()
        if version != "13":
            reason = f"unsupported Sec-WebSocket-Version {version[:20]!r}" if version else "no Sec-WebSocket-Version"
            return "426 Upgrade Required", reason + " (13 is supported)", [("Sec-WebSocket-Version", "13")]
        key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
        try:
            valid_key = len(base64.b64decode(key, validate=True)) == 16
        except (binascii.Error, ValueError):
            valid_key = False
        if not valid_key:
            return "400 Bad Request", "Sec-WebSocket-Key missing or not 16 bytes in base64", []
        return None

    def _refuse(self, status: str, reason: str, headers: Sequence[tuple[str, str]] = ()) -> list[bytes]:
        body = (reason + "\n").encode()
        self.close_connection = True  # what the client sends next may be frames: never read as a request
        self.start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                                      ("Content-Length", str(len(body))), ("Connection", "close"), *headers])
        return [body]

    def handle_error(self, type_: Any, value: BaseException, tb: Any) -> None:
        # python-engineio lets a frame that is not an Engine.IO packet escape its WebSocket
        # loop as a ValueError; that is the client's fault: one line, no traceback.
        upgraded = self.environ and self.environ.get("HTTP_UPGRADE", "").lower() == "websocket"
        if upgraded and isinstance(value, ValueError):
            log_event(server_log, "websocket_malformed_frame", "closed a WebSocket that sent a malformed frame ({error})",
                      level=logging.WARNING, error=type_.__name__)
            self.close_connection = True
            return
        super().handle_error(type_, value, tb)

    @property
    def logger(self) -> logging.Logger:
        return access_log

    def log_request(self) -> None:
        if access_log.isEnabledFor(logging.INFO) and "101" not in str(self.status):
            access_log.info("%s", redact(self.format_request()))


def prepare_instance(app: Any) -> None:
    """What an instance does before it takes connections: listen on the queue, bring live state up to date."""
    from nexus.extensions import socketio
    from nexus.realtime import keeper
    from nexus.realtime.queue import start_listening

    start_listening(socketio.server)
    keeper.start(app, socketio)


def make_server(app: Any, host: str, port: int) -> pywsgi.WSGIServer:
    """A gevent WSGI server for the app, WebSocket upgrades included (not yet listening)."""
    return pywsgi.WSGIServer(
        (host, port),
        app,
        handler_class=NexusHandler,
        log=None,  # NexusHandler logs requests itself
        error_log=server_log,
    )


class ConnectionPool(Pool):
    """gevent's Pool of a server's connection greenlets, where a connection whose greenlet handed
    it over to the event loop (a watched WebSocket, LimitedWebSocket.watch) keeps its slot until it
    ends: `size` bounds the connections served, idle WebSockets included, as it did when each
    one kept its greenlet. The server stops accepting while the pool is full, and starts again
    when a slot frees (either kind)."""

    def __init__(self, size: int | None = None):
        super().__init__(size)
        self.handed_over = 0  # connections that left their greenlet and hold a slot
        self._leaving: set[Any] = set()  # greenlets whose slot passes to their connection

    def hand_over(self, greenlet: Any) -> bool:
        """`greenlet` (one of the pool's) leaves its connection to the event loop: the slot stays
        taken when it ends, until `handed_over_ended`. False for a greenlet not in the pool."""
        if greenlet not in self.greenlets:
            return False
        self._leaving.add(greenlet)
        return True

    def handed_over_ended(self) -> None:
        """A connection handed over has ended: its slot is free."""
        self.handed_over -= 1
        self._semaphore.release()

    def _discard(self, greenlet: Any) -> None:
        if greenlet in self._leaving:
            self._leaving.discard(greenlet)
            Group._discard(self, greenlet)  # no longer a member; the semaphore stays taken, by the connection
            self.handed_over += 1
            return
        super()._discard(greenlet)

    def free_count(self) -> int:
        if self.size is None:
            return 1
        return max(0, self.size - len(self) - self.handed_over)

    def full(self) -> bool:
        return self.free_count() <= 0


#: How long before the end of NEXUS_SHUTDOWN_GRACE_S the worker cuts the connections still open,
#: so that it has exited when the grace is over.
FORCE_BEFORE_END_S = 0.5


class NexusWSGIServer(PyWSGIServer):
    """gunicorn's gevent WSGI server, where a TLS handshake that fails (a port scanner, a load
    balancer's TCP health check, a client that does not trust the certificate) is a client mistake,
    counted and logged as one line now and then, not a traceback for every connection."""

    def wrap_socket_and_handle(self, client_socket: Any, address: Any) -> Any:
        try:
            tls_socket = self.wrap_socket(client_socket, **self.ssl_args)
        except (ssl.SSLError, OSError) as exc:
            peer = address[0] if isinstance(address, tuple) and address else "an unknown address"
            CLIENT_MISTAKES.report(server_log, "tls_handshake_failed", f"a TLS handshake from {peer} failed: {exc}")
            client_socket.close()
            return None
        try:
            return self.handle(tls_socket, address)
        finally:
            tls_socket.close()


class GunicornWorker(GeventWebSocketWorker):
    """gunicorn worker: gevent-websocket with Nexus's request handler (`-k nexus.server.GunicornWorker`).

    On SIGTERM it stops accepting, drains the instance (nexus.realtime.shutdown), which ends idle
    kept-alive connections and every engine.io session, waits for the requests still running,
    and, shortly before NEXUS_SHUTDOWN_GRACE_S is over, cuts whatever clients still hold open (a
    WebSocket that never answers the close, a request that never finishes arriving) and ends its
    handlers. Its pool (ConnectionPool, worker_connections) counts the WebSockets the event loop
    watches as well as the connections that have a greenlet. The worker has exited by the end of the grace, whatever clients do, so gunicorn's
    master (whose graceful_timeout is longer, nexus.gunicorn_conf) never has to kill it.
    """

    wsgi_handler = NexusHandler
    server_class = NexusWSGIServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._servers: list[Any] = []
        self._stopping: Any = None
        self._stopped: Any = None
        self.stopped_cleanly = False

    def run(self) -> None:
        # gunicorn's gevent worker's serving, with Nexus's own end (_stop_serving) instead of
        # its wait of graceful_timeout, polled once a second, before it kills.
        import gevent
        from gevent.event import Event
        from gunicorn.http.wsgi import base_environ
        from gunicorn.sock import ssl_context
        from gunicorn.workers.ggevent import VERSION

        self._stopped = Event()
        ssl_args = {"ssl_context": ssl_context(self.cfg)} if self.cfg.is_ssl else {}
        for listener in self.sockets:
            listener.setblocking(1)
            environ = base_environ(self.cfg)
            environ.update({"wsgi.multithread": True, "SERVER_SOFTWARE": VERSION})
            server = self.server_class(listener, application=self.wsgi, spawn=ConnectionPool(self.worker_connections),
                                       log=self.log, handler_class=self.wsgi_handler, environ=environ, **ssl_args)
            server.start()
            self._servers.append(server)
        while self.alive:
            self.notify()
            self._stopped.wait(1.0)  # set when a SIGTERM's stop is over: the worker exits at once
        if self._stopping is None:  # alive turned off without SIGTERM (the parent went away)
            self._stopping = gevent.spawn(self._stop_serving)
        while not self._stopping.ready():
            self.notify()
            self._stopping.join(1.0)
        self.stopped_cleanly = True  # nexus.gunicorn_conf's worker_exit then skips Python's teardown

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        if self._stopping is None:
            import gevent

            self._stopping = gevent.spawn(self._stop_serving)

    def _stop_serving(self) -> None:
        import time

        import gevent

        started = time.monotonic()
        shutdown = getattr(self.wsgi, "extensions", {}).get("nexus.shutdown")
        grace = float(shutdown.grace_s) if shutdown is not None else float(self.cfg.graceful_timeout)
        deadline = started + max(grace - FORCE_BEFORE_END_S, grace / 2)
        for server in self._servers:
            server.close()  # no new connections: the load balancer sends them to another instance
        if shutdown is not None:
            drain = gevent.spawn(shutdown.drain)
            drain.join(max(0.0, deadline - time.monotonic()))
            if not drain.ready():
                server_log.warning("the drain did not finish within the grace; stopping anyway")
        else:
            CONNECTIONS.begin_drain()
        pools = [server.pool for server in self._servers if server.pool is not None]

        def still_open() -> int:  # connections with a greenlet, and WebSockets the event loop watches
            return sum(len(pool) + getattr(pool, "handed_over", 0) for pool in pools)

        while still_open() and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if still_open():
            cut = CONNECTIONS.close_all()
            ended = time.monotonic() + 0.2
            while still_open() and time.monotonic() < ended:
                gevent.sleep(0.02)
            running = sum(len(pool) for pool in pools)
            for pool in pools:
                pool.kill(block=True, timeout=0.2)
            server_log.warning("end of the shutdown grace: cut %d connection(s) clients still held open, "
                               "ended %d handler(s) still running", cut, running)
        log_event(server_log, "worker_stopped", "worker stopped {seconds:.2f}s after SIGTERM",
                  seconds=round(time.monotonic() - started, 3))
        if self._stopped is not None:
            self._stopped.set()
