"""Serving Nexus: gevent's WSGI server with WebSocket support, standalone or under gunicorn."""
from __future__ import annotations

import io
import logging
import socket
import struct
from collections import deque
from typing import Any

import geventwebsocket.handler
from gevent import pywsgi
from geventwebsocket.exceptions import ProtocolError, WebSocketError
from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
from geventwebsocket.handler import WebSocketHandler
from geventwebsocket.websocket import Header, WebSocket

from nexus.logs import redact

access_log = logging.getLogger("nexus.access")
server_log = logging.getLogger("nexus.server")


DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
CLOSE_TOO_BIG = 1009


class MessageTooBig(Exception):
    """A WebSocket message longer than the configured maximum."""


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
    inflated; masks are removed with integer arithmetic and text is checked by one strict UTF-8
    decode (gevent-websocket does both in Python, byte by byte, which cost more than the event).

    Writing: a frame goes straight to the socket with one non-blocking send from whichever
    greenlet emits it (a room broadcast writes to every member without switching greenlets);
    what the kernel does not take waits, in order, in a backlog flushed by a greenlet that exists
    only while there is one. A peer whose backlog passes NEXUS_MAX_BACKLOG_BYTES is disconnected.
    """

    __slots__ = ("max_message_bytes", "max_backlog_bytes", "_message_bytes", "_socket", "_raw", "_backlog",
                 "_backlog_bytes", "_flusher", "_rbuf")

    def __init__(self, environ: Any, stream: Any, handler: Any):
        super().__init__(environ, stream, handler)
        config = getattr(handler.application, "config", {}).get("NEXUS")
        self.max_message_bytes = config.max_payload_bytes if config is not None else DEFAULT_MAX_MESSAGE_BYTES
        self.max_backlog_bytes = config.max_backlog_bytes if config is not None else MAX_BACKLOG_BYTES
        self._message_bytes = 0
        self._socket = handler.socket  # gevent's socket: blocking sends park only the calling greenlet
        self._raw = getattr(handler.socket, "_sock", None)  # the non-blocking OS socket beneath it
        self._backlog: deque[Any] | None = None  # made when the kernel first refuses a write
        self._backlog_bytes = 0
        self._flusher: Any = None
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
            chunk = self._socket.recv(max(65536, size - len(buffer)))
            if not chunk:
                raise WebSocketError("Unexpected EOF")
            buffer += chunk
        return buffer

    def read_frame(self) -> Any:
        buffer = self._fill(2)
        first, second = buffer[0], buffer[1]
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
        if second & 0x80:
            header.mask = bytes(self._fill(offset + 4)[offset:offset + 4])
            offset += 4
        else:
            header.mask = b""
        if header.opcode in (self.OPCODE_TEXT, self.OPCODE_BINARY):
            self._message_bytes = 0
        if header.opcode in (self.OPCODE_TEXT, self.OPCODE_BINARY, self.OPCODE_CONTINUATION):
            self._message_bytes += header.length
            if self._message_bytes > self.max_message_bytes:  # refused before its payload is read
                raise MessageTooBig(f"message of more than {self.max_message_bytes} bytes")
        if header.flags:
            raise ProtocolError("reserved bits set (compression is not enabled)")
        end = offset + header.length
        buffer = self._fill(end)
        payload = bytes(buffer[offset:end])
        if len(buffer) == end:
            self._rbuf = bytearray()  # an idle connection keeps no buffer
        else:
            del buffer[:end]
        if header.mask:
            payload = unmask(payload, header.mask)
        return header, payload

    def validate_utf8(self, payload: Any) -> None:
        """Text is validated once, whole, by the strict decode that turns it into a str."""

    # -- writing ----------------------------------------------------------------------

    def send_frame(self, message: Any, opcode: int) -> None:
        if self.closed:
            raise WebSocketError("Socket is dead")
        if isinstance(message, str):
            message = message.encode()
        elif not isinstance(message, bytes):
            message = bytes(message or b"")
        self.write(frame_header(len(message), opcode) + message)

    def write(self, data: bytes) -> None:
        """Write bytes (whole frames) in order, without blocking the caller."""
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

    def _queue(self, data: Any) -> None:
        if self._backlog is None:
            self._backlog = deque()
        self._backlog.append(data)
        self._backlog_bytes += len(data)
        if self._backlog_bytes > self.max_backlog_bytes:
            waiting = self._backlog_bytes
            self._backlog.clear()
            self._backlog_bytes = 0
            server_log.warning("dropped a WebSocket whose client stopped reading (%d bytes waiting)", waiting)
            self._abort()
            raise WebSocketError("Socket is dead")
        if self._flusher is None:
            import gevent

            self._flusher = gevent.spawn(self._flush)

    def _flush(self) -> None:
        try:
            while self._backlog:
                chunk = self._backlog[0]  # stays queued while it is written: later writes line up behind it
                self._socket.sendall(chunk)
                self._backlog.popleft()
                self._backlog_bytes -= len(chunk)
        except OSError:
            self._backlog.clear()
            self._backlog_bytes = 0
        finally:
            self._flusher = None
            if not self._backlog:
                self._backlog = None

    def flushed(self, timeout: float) -> bool:
        """Wait (at most `timeout` seconds) until everything written has been handed to the kernel."""
        flusher = self._flusher
        if flusher is not None:
            flusher.join(timeout)
        return not self._backlog

    def stop_reading(self) -> None:
        """Wake a reader still waiting on a connection that is over."""
        try:
            self._socket.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def _abort(self) -> None:
        # Shut the connection down under the reader, which then ends the session as a lost transport.
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self, code: int = 1000, message: bytes = b"") -> None:
        """Send a close frame that carries its status code (gevent-websocket's leaves it out), once."""
        if self.closed:
            return
        try:
            reason = message.encode() if isinstance(message, str) else bytes(message or b"")
            self.send_frame(struct.pack("!H", code) + reason[:123], opcode=self.OPCODE_CLOSE)
        except (WebSocketError, TypeError):
            pass  # the peer is gone; closing anyway
        finally:
            self.closed = True
            self.stream = None
            self.raw_write = None
            self.raw_read = None
            self.environ = None

    def receive(self) -> Any:
        try:
            return super().receive()
        except MessageTooBig as exc:
            server_log.warning("closed a WebSocket: %s", exc)
            self.close(CLOSE_TOO_BIG, b"message too big")
            return None


# gevent-websocket's handler builds its WebSocket by this module-level name; Nexus's servers
# (nexus serve, the gunicorn worker) use the limited one.
geventwebsocket.handler.WebSocket = LimitedWebSocket


class OpenConnections:
    """The HTTP connections this process serves, so that a drain can end those nobody is using.

    A connection *waits* while its handler reads a request: a kept-alive connection between two
    requests, or one whose request has not fully arrived. Otherwise the application has it (a
    REST call, a long-polling GET, a WebSocket). Once draining, every response says
    `Connection: close` and no connection waits for another request.
    """

    def __init__(self) -> None:
        self._handlers: set[Any] = set()
        self.draining = False

    def __len__(self) -> int:
        return len(self._handlers)

    def add(self, handler: Any) -> None:
        self._handlers.add(handler)

    def discard(self, handler: Any) -> None:
        self._handlers.discard(handler)

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


class NexusHandler(WebSocketHandler):
    """gevent-websocket's handler, logging through `nexus.access` with tokens scrubbed, and known
    to CONNECTIONS for as long as its connection is open."""

    waiting_for_request = False
    requests_read = 0
    _cut = False

    def handle(self) -> None:
        # Events are small writes (an event, then its ack): without TCP_NODELAY the second
        # waits for the peer's delayed ACK, adding ~40 ms to every round trip.
        try:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not a TCP socket (a Unix socket behind a proxy)
            pass
        CONNECTIONS.add(self)
        try:
            super().handle()
        finally:
            CONNECTIONS.discard(self)

    def read_requestline(self) -> str:
        if CONNECTIONS.draining and self.requests_read and not self.request_arriving():
            return ""  # no waiting for a next request on a draining instance: the connection ends
        self.waiting_for_request = True
        return super().read_requestline()

    def read_request(self, raw_requestline: str) -> Any:
        try:
            return super().read_request(raw_requestline)
        finally:
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
        if self._cut:
            return None  # a request cut short by the drain is not the client's error: just close
        return super()._handle_client_error(ex)

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
        return super().start_response(status, headers, exc_info)

    def upgrade_websocket(self) -> Any:
        # gevent-websocket answers 101 before the application sees the request, so engine.io's
        # origin check would come after the upgrade: refuse a cross-site WebSocket here, with 403.
        if self.environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            allowed = getattr(self.application, "extensions", {}).get("nexus.origin_allowed")
            origin = self.environ.get("HTTP_ORIGIN")
            if allowed is not None and origin is not None and not allowed(origin, self.environ):
                server_log.warning("refused a WebSocket from origin %r", origin[:200])
                self.start_response("403 Forbidden", [("Content-Type", "text/plain"), ("Content-Length", "19")])
                return [b"Origin not allowed\n"]
        return super().upgrade_websocket()

    def handle_error(self, type_: Any, value: BaseException, tb: Any) -> None:
        # python-engineio lets a frame that is not an Engine.IO packet escape its WebSocket
        # loop as a ValueError; that is the client's fault: one line, no traceback.
        upgraded = self.environ and self.environ.get("HTTP_UPGRADE", "").lower() == "websocket"
        if upgraded and isinstance(value, ValueError):
            server_log.warning("closed a WebSocket that sent a malformed frame (%s)", type_.__name__)
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


#: How long before the end of NEXUS_SHUTDOWN_GRACE_S the worker cuts the connections still open,
#: so that it has exited when the grace is over.
FORCE_BEFORE_END_S = 0.5


class GunicornWorker(GeventWebSocketWorker):
    """gunicorn worker: gevent-websocket with Nexus's request handler (`-k nexus.server.GunicornWorker`).

    On SIGTERM it stops accepting, drains the instance (nexus.realtime.shutdown), which ends idle
    kept-alive connections and every engine.io session, waits for the requests still running,
    and, shortly before NEXUS_SHUTDOWN_GRACE_S is over, cuts whatever clients still hold open (a
    WebSocket that never answers the close, a request that never finishes arriving) and ends its
    handlers. The worker has exited by the end of the grace, whatever clients do, so gunicorn's
    master (whose graceful_timeout is longer, nexus.gunicorn_conf) never has to kill it.
    """

    wsgi_handler = NexusHandler

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
        from gevent.pool import Pool
        from gunicorn.http.wsgi import base_environ
        from gunicorn.sock import ssl_context
        from gunicorn.workers.ggevent import VERSION

        self._stopped = Event()
        ssl_args = {"ssl_context": ssl_context(self.cfg)} if self.cfg.is_ssl else {}
        for listener in self.sockets:
            listener.setblocking(1)
            environ = base_environ(self.cfg)
            environ.update({"wsgi.multithread": True, "SERVER_SOFTWARE": VERSION})
            server = self.server_class(listener, application=self.wsgi, spawn=Pool(self.worker_connections),
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
        while any(len(pool) for pool in pools) and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if any(len(pool) for pool in pools):
            cut = CONNECTIONS.close_all()
            ended = time.monotonic() + 0.2
            while any(len(pool) for pool in pools) and time.monotonic() < ended:
                gevent.sleep(0.02)
            running = sum(len(pool) for pool in pools)
            for pool in pools:
                pool.kill(block=True, timeout=0.2)
            server_log.warning("end of the shutdown grace: cut %d connection(s) clients still held open, "
                               "ended %d handler(s) still running", cut, running)
        server_log.info("worker stopped %.2fs after SIGTERM", time.monotonic() - started)
        if self._stopped is not None:
            self._stopped.set()
