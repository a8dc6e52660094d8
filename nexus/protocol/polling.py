"""Engine.IO v4's front door: every request on the Socket.IO path, both transports.

`EngineFront` is WSGI middleware in front of the application. It answers the handshake (with
pingInterval, pingTimeout and maxPayload exactly as configured, in milliseconds), long-polling
GETs and POSTs, and hands WebSockets (new ones, and upgrades of long-polling sessions) to
nexus.protocol.websocket. Requests it cannot serve get HTTP 400 with the Engine.IO error body
(`{"code": n, "message": ...}`), a POST body over maxPayload 413, at once and without a
traceback; a session that sent something malformed is closed and released.

python-engineio's `Server` stays as the registry python-socketio talks to (it sends with
`eio.send_packet`, closes with `eio.disconnect`, reads `eio.get_session` and `eio.transport`):
every open `EngineSession` is in `eio.sockets`, and the application's handlers are called as
registered with `eio.on`. Those few points of contact are the adapter below (`_EngineIO`);
tests/protocol/test_engineio_adapter.py fails if a python-engineio release moves them.
"""
from __future__ import annotations

import base64
import binascii
import gzip
import io
import logging
import time
from collections import deque
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

import gevent
from engineio import packet as eio_packet
from gevent.event import Event

from nexus.logs import CLIENT_MISTAKES
from nexus.protocol.websocket import DirectOutput, Pinger, run_websocket

log = logging.getLogger("nexus.protocol")

#: Packets one long-polling POST may carry (clients batch what they emitted meanwhile).
MAX_PACKETS_PER_POST = 1000
#: Responses from this size on are gzipped for clients that accept it.
COMPRESSION_THRESHOLD = 1024
#: How long a session the server closed keeps its last packets for the client's next GET.
LINGER_S = 10.0

# Engine.IO's error codes (the reference server's), with their messages.
UNKNOWN_TRANSPORT = 0
UNKNOWN_SID = 1
BAD_HANDSHAKE_METHOD = 2
BAD_REQUEST = 3
FORBIDDEN = 4
UNSUPPORTED_PROTOCOL_VERSION = 5
_MESSAGES = {
    UNKNOWN_TRANSPORT: "Transport unknown",
    UNKNOWN_SID: "Session ID unknown",
    BAD_HANDSHAKE_METHOD: "Bad handshake method",
    BAD_REQUEST: "Bad request",
    FORBIDDEN: "Forbidden",
    UNSUPPORTED_PROTOCOL_VERSION: "Unsupported protocol version",
}
TRANSPORTS = ("polling", "websocket")
_NOOP = eio_packet.Packet(eio_packet.NOOP)

#: What a session keeps of its handshake's WSGI environ, which python-socketio holds for the
#: session's life and Flask-SocketIO builds the connect and disconnect handlers' request from:
#: what WSGI and Flask need for a request, the client's address and query string, and the headers
#: Nexus reads (origin, user agent, a proxy's forwarding headers). The rest (the server's socket
#: and streams, cookies, the upgrade's own headers) is left to the request that brought it.
KEPT_ENVIRON = frozenset({
    "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME", "SERVER_PORT",
    "SERVER_PROTOCOL", "REMOTE_ADDR", "REMOTE_PORT",
    "wsgi.version", "wsgi.url_scheme", "wsgi.errors", "wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once",
    "HTTP_HOST", "HTTP_ORIGIN", "HTTP_USER_AGENT", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_PREFIX", "HTTP_X_REAL_IP",
    "werkzeug.proxy_fix.orig",
})
_NO_BODY = io.BytesIO(b"")


def kept_environ(environ: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The part of a handshake's environ a session keeps (KEPT_ENVIRON), with `extra` added."""
    kept = {key: environ[key] for key in KEPT_ENVIRON.intersection(environ)}
    kept["wsgi.input"] = _NO_BODY  # a request built from it reads no body
    kept.update(extra)
    return kept


class PacketError(ValueError):
    """Something a client sent that is not an Engine.IO packet or payload."""


class _EngineIO:
    """The points where Nexus meets python-engineio's `Server` (its public attributes and methods).

    - `eio.sockets`: sid -> session; python-engineio's `send_packet`, `disconnect`, `get_session`
      and `transport` look sessions up there and use `send`, `close`, `session`, `closed`,
      `upgraded` on them, which `EngineSession` provides;
    - `eio.handlers`: the handlers python-socketio registered with `eio.on` ('connect',
      'message', 'disconnect'), called with the arguments python-engineio calls them with;
    - `eio.generate_id()` and `eio.reason` (the disconnect reasons).
    """

    def __init__(self, eio: Any):
        self.eio = eio
        self.reason = eio.reason

    def sessions(self) -> dict[str, Any]:
        return self.eio.sockets  # python-engineio replaces the dict on disconnect(): never cached

    def new_sid(self) -> str:
        return self.eio.generate_id()

    def handler(self, event: str) -> Callable[..., Any] | None:
        return self.eio.handlers.get(event)


class Outbox:
    """The packets waiting for a session's next long-polling GET."""

    def __init__(self) -> None:
        self.packets: deque[Any] = deque()
        self.ready = Event()

    def put(self, pkt: Any) -> None:
        self.packets.append(pkt)
        self.ready.set()

    def take(self) -> list[Any]:
        packets = list(self.packets)
        self.packets.clear()
        self.ready.clear()
        return packets

    def __len__(self) -> int:
        return len(self.packets)


class EngineSession:
    """One Engine.IO session: its heartbeat, its packets in and out, closing, and the upgrade."""

    def __init__(self, front: EngineFront, sid: str):
        self.front = front
        self.server = front.eio  # what python-engineio's own sockets call their server
        self.sid = sid
        self.max_payload = front.max_payload
        self.session: dict[str, Any] = {}  # python-engineio's per-session store (get_session)
        self.connected = False
        self.upgrading = False
        self.upgraded = False
        self.closing = False
        self.closed = False
        #: Its PONG came too late: over for every request from now on, before the close (which
        #: runs the application's disconnect handlers, in a greenlet of its own) has run.
        self.timed_out = False
        self.heartbeat = 0  # the Pinger's generation counter
        self.awaiting_pong = False
        self.outbox: Outbox | None = Outbox()
        self.output: DirectOutput | None = None
        # Where packets go: the outbox, then the WebSocket once attached (nexus.realtime's room
        # fan-out writes a shared frame to it directly).
        self.queue: Outbox | DirectOutput | None = self.outbox
        self.polls = 0  # GETs waiting on this session now

    # -- out -----------------------------------------------------------------------------

    def send(self, pkt: Any) -> None:
        """Send a packet (an engineio.packet.Packet) to the client."""
        if self.closed:
            return
        if self.front.trace:
            self.front.trace_packet("Sending", self.sid, pkt.packet_type, pkt.data)
        if self.output is not None:
            self.output.put(pkt)
        else:
            self.outbox.put(pkt)

    # -- in ------------------------------------------------------------------------------

    def receive(self, data: str | bytes) -> None:
        """Handle one packet from the client (a WebSocket frame, or one packet of a POST's payload)."""
        if isinstance(data, (bytes, bytearray)):
            self._message(bytes(data))
            return
        if not data:
            raise PacketError("empty packet")
        kind = data[0]
        if self.front.trace:
            self.front.trace_packet("Received", self.sid, kind, data[1:])
        if kind == "4":
            self._message(data[1:])
        elif kind == "3":
            self.front.pinger.pong(self)
        elif kind == "1":
            self.close(wait=False, abort=True, reason=self.front.engine.reason.CLIENT_DISCONNECT)
        elif kind == "b" and self.output is None:
            self._message(decode_base64(data))
        elif kind in "56" and len(data) == 1:
            pass  # UPGRADE and NOOP outside an upgrade carry nothing
        elif kind.isdigit() and self.output is not None:
            pass  # a packet type this server does not take, on WebSocket: ignored, as python-engineio did
        else:
            raise PacketError(f"unknown packet type {kind!r}"[:40])

    def _message(self, data: str | bytes) -> None:
        handler = self.front.engine.handler("message")
        if handler is None or self.closed:
            return
        try:
            handler(self.sid, data)
        except Exception:  # a bug in a handler: logged, and the session goes on (as python-engineio does)
            log.exception("message handler error")

    # -- long-polling --------------------------------------------------------------------

    def poll(self, timeout: float) -> list[Any]:
        """The packets for a long-polling GET, waiting (at most `timeout`) until there are some."""
        outbox = self.outbox
        self.polls += 1
        try:
            deadline = time.monotonic() + timeout
            while not (len(outbox) or self.closed or self.upgrading):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not outbox.ready.wait(remaining):
                    break
                outbox.ready.clear()
        finally:
            self.polls -= 1
        packets = outbox.take()
        if self.closed and self.front.lingering.get(self.sid) is self:
            del self.front.lingering[self.sid]  # the client has its last packets
        return packets or [_NOOP]  # a GET ended by a close, an upgrade or the time limit

    # -- WebSocket -----------------------------------------------------------------------

    def begin_upgrade(self) -> bool:
        if self.upgrading or self.upgraded or self.closed or self.closing:
            return False
        self.upgrading = True
        return True

    def probed(self) -> None:
        """The probe is answered: a waiting GET ends now (with a NOOP), and later ones at once."""
        self.outbox.ready.set()

    def abort_upgrade(self) -> None:
        self.upgrading = False

    def attach(self, output: DirectOutput) -> None:
        """Move the session onto a WebSocket: what waited for a GET goes first, then everything else."""
        waiting = self.outbox.take() if self.outbox is not None else []
        self.connected = True
        self.upgraded = True
        self.upgrading = False
        self.output = output
        self.queue = output
        self.outbox = None
        for pkt in waiting:
            if pkt.packet_type != eio_packet.NOOP:  # a NOOP only ends a GET: never replayed
                output.put(pkt)

    # -- closing -------------------------------------------------------------------------

    def close(self, wait: bool = True, abort: bool = False, reason: str | None = None) -> None:
        """Close the session: the application hears of it, the client gets a CLOSE packet (unless
        `abort`), a waiting GET is answered, and the session is released."""
        if self.closed or self.closing:
            return
        engine = self.front.engine
        self.closing = True
        self.front.pinger.stop(self)
        reason = reason or engine.reason.SERVER_DISCONNECT
        handler = engine.handler("disconnect")
        if handler is not None:
            try:
                handler(self.sid, reason)
            except Exception:  # the session closes anyway
                log.exception("disconnect handler error")
        if not abort:
            self.send(eio_packet.Packet(eio_packet.CLOSE))
        self.closed = True
        sessions = engine.sessions()
        if sessions.get(self.sid) is self:
            del sessions[self.sid]
        if self.output is not None:
            self.output.close()
            if wait:
                self.output.join()
        elif self.outbox is not None:
            if self.polls:
                self.outbox.ready.set()  # the waiting GET takes what is left (or a NOOP)
            elif len(self.outbox) and reason == engine.reason.SERVER_DISCONNECT:
                self.front.linger(self)  # the client's next GET still learns why it was closed
            else:
                self.outbox.take()
        self.session = {}


def decode_base64(data: str) -> bytes:
    """A `b`-prefixed long-polling packet's bytes."""
    try:
        return base64.b64decode(data[1:], validate=True)
    except (binascii.Error, ValueError):
        raise PacketError("invalid base64 packet") from None


def decode_payload(body: bytes, max_packets: int = MAX_PACKETS_PER_POST) -> list[str]:
    """The packets of a long-polling POST body, checked whole before any is handled."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PacketError("payload is not UTF-8") from None
    if not text:
        raise PacketError("empty payload")
    packets = text.split("\x1e")
    if len(packets) > max_packets:
        raise PacketError(f"more than {max_packets} packets in one payload")
    for pkt in packets:
        if not pkt:
            raise PacketError("empty packet")
        if pkt[0] not in "13456b" or (pkt[0] in "13" and len(pkt) > 1):
            raise PacketError(f"unknown packet type {pkt[0]!r}")
        if pkt[0] == "b":
            decode_base64(pkt)
    return packets


def encode_payload(packets: Iterable[Any]) -> bytes:
    """Packets joined for a long-polling response (binary ones base64-encoded, `b`-prefixed)."""
    return "\x1e".join(pkt.encode(b64=True) for pkt in packets).encode()


class _Refusal(Exception):
    """A request answered with an Engine.IO error (400 unless `status` says otherwise)."""

    def __init__(self, code: int, status: str = "400 Bad Request", close: bool = False, message: str | None = None):
        super().__init__(message or _MESSAGES[code])
        self.code = code
        self.status = status
        self.close_connection = close


class EngineFront:
    """WSGI middleware: Engine.IO v4 on `path`, everything else to the application."""

    def __init__(self, app: Any, eio: Any, path: str, *, ping_interval_ms: int, ping_timeout_ms: int,
                 max_payload: int, origin_allowed: Callable[[str, dict[str, Any]], bool] | None,
                 cors_credentials: bool = True, environ_extra: dict[str, Any] | None = None):
        self.app = app
        self.eio = eio
        self.engine = _EngineIO(eio)
        self.prefix = "/" + path.strip("/") + "/"
        self.ping_interval_ms = ping_interval_ms
        self.ping_timeout_ms = ping_timeout_ms
        self.max_payload = max_payload
        self.origin_allowed = origin_allowed
        self.cors_credentials = cors_credentials
        self.environ_extra = dict(environ_extra or {})
        self.pinger = Pinger(ping_interval_ms / 1000, ping_timeout_ms / 1000, eio.reason.PING_TIMEOUT)
        # Protocol debugging (DEBUG=engineio:*) logs every packet through engine.io's logger, whose
        # lines the log filter scrubs of session ids; off, a packet costs one attribute check.
        self.trace_log = getattr(eio, "logger", None) or logging.getLogger("engineio")
        self.trace = self.trace_log.isEnabledFor(logging.INFO)
        self.lingering: dict[str, EngineSession] = {}

    # -- routing -------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO") or ""
        if not path.startswith(self.prefix):
            return self.app(environ, start_response)
        ws = environ.get("wsgi.websocket")
        try:
            return self._serve(environ, start_response, ws)
        except _Refusal as refusal:
            if ws is not None:  # the 101 is out already: the WebSocket is closed instead
                ws.close(1002, refusal.args[0].encode())
                return []
            return self._error(environ, start_response, refusal)

    def refuse_upgrade(self, environ: dict[str, Any], start_response: Any) -> list[bytes] | None:
        """Answer a WebSocket upgrade request that Engine.IO refuses (unknown transport, a version
        other than 4, an unknown or closed session) with its HTTP 400, before the server answers
        101, as over long-polling; None for a request that may be upgraded (or is not Engine.IO's)."""
        if not (environ.get("PATH_INFO") or "").startswith(self.prefix):
            return None
        query = parse_qs(environ.get("QUERY_STRING", ""))
        try:
            self._check_transport(query, websocket=True)
            sid = (query.get("sid") or [None])[0]
            if sid is not None and self._open_session(sid) is None:
                self.mistake("invalid_session", "refused an Engine.IO upgrade: session unknown or closed")
                raise _Refusal(UNKNOWN_SID)
        except _Refusal as refusal:
            return self._error(environ, start_response, refusal)
        return None

    def _open_session(self, sid: str) -> EngineSession | None:
        """The session `sid` names, unless it is unknown or closed."""
        session = self.engine.sessions().get(sid)
        if isinstance(session, EngineSession) and not session.closed and not session.timed_out:
            return session
        return None

    def _check_transport(self, query: dict[str, list[str]], *, websocket: bool) -> None:
        """Refuse a request whose transport is unknown or does not match how it came (an upgrade
        or not), or whose Engine.IO version is not 4."""
        transport = (query.get("transport") or [None])[0]
        if transport not in TRANSPORTS:
            self.mistake("invalid_transport", "refused an Engine.IO request: transport unknown")
            raise _Refusal(UNKNOWN_TRANSPORT)
        if query.get("EIO") != ["4"]:
            self.mistake("unsupported_version", "refused an Engine.IO request: protocol version is not 4")
            raise _Refusal(UNSUPPORTED_PROTOCOL_VERSION)
        if (transport == "websocket") != websocket:
            self.mistake("invalid_upgrade", "refused an Engine.IO request: transport and upgrade disagree")
            raise _Refusal(BAD_REQUEST)

    def _serve(self, environ: dict[str, Any], start_response: Any, ws: Any) -> Any:
        method = environ.get("REQUEST_METHOD", "GET")
        origin = environ.get("HTTP_ORIGIN")
        if origin is not None and self.origin_allowed is not None and not self.origin_allowed(origin, environ):
            self.mistake("origin_refused", f"refused an Engine.IO request from origin {origin[:200]!r}")
            raise _Refusal(FORBIDDEN)
        if method == "OPTIONS" and ws is None:
            start_response("204 No Content", self._cors(environ))
            return []
        query = parse_qs(environ.get("QUERY_STRING", ""))
        self._check_transport(query, websocket=ws is not None)
        sid = (query.get("sid") or [None])[0]
        if sid is None:
            if method != "GET":
                self.mistake("method_not_allowed", f"refused an Engine.IO handshake by {method[:10]}")
                raise _Refusal(BAD_HANDSHAKE_METHOD)
            return self._handshake(environ, start_response, ws)
        if method not in ("GET", "POST"):
            self.mistake("method_not_allowed", f"refused an Engine.IO request by {method[:10]}")
            raise _Refusal(BAD_REQUEST)
        session = self._open_session(sid)
        if session is None:
            lingering = self.lingering.get(sid)
            if lingering is not None and method == "GET" and ws is None:
                return self._respond(environ, start_response, encode_payload(lingering.poll(0)))
            self.mistake("invalid_session", "refused an Engine.IO request: session unknown or closed")
            raise _Refusal(UNKNOWN_SID)
        if ws is not None:
            run_websocket(session, ws)
            return []
        if session.upgraded:
            self.mistake("unexpected_http", "refused an HTTP request for a session on WebSocket")
            raise _Refusal(BAD_REQUEST)
        if method == "GET":
            return self._get(environ, start_response, session)
        return self._post(environ, start_response, session)

    # -- the handshake -------------------------------------------------------------------

    def _handshake(self, environ: dict[str, Any], start_response: Any, ws: Any) -> Any:
        sid = self.engine.new_sid()
        session = EngineSession(self, sid)
        self.engine.sessions()[sid] = session
        session.send(eio_packet.Packet(eio_packet.OPEN, {
            "sid": sid,
            "upgrades": [] if ws is not None else ["websocket"],
            "pingInterval": self.ping_interval_ms,
            "pingTimeout": self.ping_timeout_ms,
            "maxPayload": self.max_payload,
        }))
        connect = self.engine.handler("connect")
        # The application keeps the handshake's environ for the session's life (Flask-SocketIO
        # finds its app there, under 'flask.app'): a copy of what a session needs of it.
        kept = kept_environ(environ, self.environ_extra)
        try:
            accepted = connect(sid, kept) if connect is not None else None
        except Exception:
            log.exception("connect handler error")
            accepted = False
        if accepted is not None and accepted is not True:
            self.engine.sessions().pop(sid, None)
            session.closed = True
            raise _Refusal(FORBIDDEN, "403 Forbidden")
        self.pinger.start(session)
        if ws is not None:
            run_websocket(session, ws)
            return []
        session.connected = True
        return self._respond(environ, start_response, encode_payload(session.outbox.take()))

    # -- long-polling --------------------------------------------------------------------

    def _get(self, environ: dict[str, Any], start_response: Any, session: EngineSession) -> Any:
        if session.upgrading:
            return self._respond(environ, start_response, b"6")  # the client is moving to WebSocket
        if session.polls:
            # Two GETs at once: no client does that. The waiting one ends with a CLOSE packet.
            self.mistake("duplicate_poll", "closed an Engine.IO session: two long-polling GETs at once")
            session.close(wait=False, abort=False, reason=self.eio.reason.TRANSPORT_ERROR)
            raise _Refusal(BAD_REQUEST)
        packets = session.poll((self.ping_interval_ms + self.ping_timeout_ms) / 1000)
        return self._respond(environ, start_response, encode_payload(packets))

    def _post(self, environ: dict[str, Any], start_response: Any, session: EngineSession) -> Any:
        try:
            body = self._read_body(environ)
        except _Refusal:
            session.close(wait=False, abort=True, reason=self.eio.reason.TRANSPORT_ERROR)
            raise
        try:
            packets = decode_payload(body)
        except PacketError as exc:
            self.mistake("malformed_payload", f"closed a long-polling session that sent a malformed payload ({exc})")
            session.close(wait=False, abort=False, reason=self.eio.reason.TRANSPORT_ERROR)
            raise _Refusal(BAD_REQUEST) from None
        for pkt in packets:
            if session.closed:
                break
            session.receive(pkt)
        return self._respond(environ, start_response, b"ok")

    def _read_body(self, environ: dict[str, Any]) -> bytes:
        """The POST body, up to maxPayload: 413 past it (unread), 400 if it does not arrive whole."""
        limit = self.max_payload
        declared = environ.get("CONTENT_LENGTH")
        stream = environ.get("wsgi.input")
        if declared:
            try:
                length = int(declared)
            except ValueError:
                raise _Refusal(BAD_REQUEST, close=True) from None
            if length < 0:
                raise _Refusal(BAD_REQUEST, close=True)
            if length > limit:
                CLIENT_MISTAKES.count("payload_too_large")
                log.warning("refused a long-polling body of %d bytes (limit %d)", length, limit)
                raise _Refusal(BAD_REQUEST, "413 Payload Too Large", close=True, message="Payload too large")
            try:
                body = stream.read(length) if length else b""
            except (OSError, ValueError):
                raise _Refusal(BAD_REQUEST, close=True) from None
            if len(body) != length:
                raise _Refusal(BAD_REQUEST, close=True)
            return body
        if "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower() or stream is None:
            return b""
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                chunk = stream.read(min(65536, limit + 1 - size))
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                chunks.append(chunk)
                if size > limit:
                    CLIENT_MISTAKES.count("payload_too_large")
                    log.warning("refused a chunked long-polling body of more than %d bytes", limit)
                    raise _Refusal(BAD_REQUEST, "413 Payload Too Large", close=True, message="Payload too large")
        except (OSError, ValueError):
            raise _Refusal(BAD_REQUEST, close=True) from None

    def trace_packet(self, direction: str, sid: str, kind: Any, data: Any) -> None:
        """One line per packet, as python-engineio's debugging writes them."""
        code = str(kind)
        names = eio_packet.packet_names
        name = names[int(code)] if code.isascii() and code.isdigit() and int(code) < len(names) else "BINARY" if code == "b" else "UNKNOWN"
        shown = "<binary>" if isinstance(data, (bytes, bytearray)) else data
        self.trace_log.info("%s: %s packet %s data %s", sid, direction, name, str(shown)[:1000])

    @staticmethod
    def mistake(kind: str, message: str) -> None:
        """A client's mistake: counted (nexus_client_errors_total), and logged as a warning at most
        once a minute per kind, so that no client can fill the log."""
        CLIENT_MISTAKES.report(log, kind, message)

    def linger(self, session: EngineSession) -> None:
        """Keep a closed session's last packets for the client's next GET, a short while."""
        self.lingering[session.sid] = session
        gevent.spawn_later(LINGER_S, self.lingering.pop, session.sid, None)

    # -- responses -----------------------------------------------------------------------

    def _cors(self, environ: dict[str, Any]) -> list[tuple[str, str]]:
        """CORS headers for an allowed origin, and `Connection: close` echoed to a client
        that asked for it (gevent closes the connection anyway; clients that pool connections
        would otherwise send their next request into a closed socket)."""
        headers: list[tuple[str, str]] = []
        if "close" in environ.get("HTTP_CONNECTION", "").lower():
            headers.append(("Connection", "close"))
        origin = environ.get("HTTP_ORIGIN")
        if origin is None or (self.origin_allowed is not None and not self.origin_allowed(origin, environ)):
            return headers
        headers += [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
        if self.cors_credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        if environ.get("REQUEST_METHOD") == "OPTIONS":
            headers.append(("Access-Control-Allow-Methods", "OPTIONS, GET, POST"))
            requested = environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS")
            if requested:
                headers.append(("Access-Control-Allow-Headers", requested[:1000]))
        return headers

    def _respond(self, environ: dict[str, Any], start_response: Any, body: bytes) -> list[bytes]:
        headers = [("Content-Type", "text/plain; charset=UTF-8"), ("Cache-Control", "no-store")]
        if len(body) >= COMPRESSION_THRESHOLD and "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""):
            body = gzip.compress(body, compresslevel=6)
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(len(body))))
        start_response("200 OK", headers + self._cors(environ))
        return [body]

    def _error(self, environ: dict[str, Any], start_response: Any, refusal: _Refusal) -> list[bytes]:
        body = eio_packet.Packet.json.dumps({"code": refusal.code, "message": refusal.args[0]})
        body = body.encode() if isinstance(body, str) else body
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        cors = self._cors(environ)
        if refusal.close_connection and ("Connection", "close") not in cors:
            headers.append(("Connection", "close"))  # what is left of the body is not read
        start_response(refusal.status, headers + cors)
        return [body]

def install(app: Any, server: Any, path: str, settings: Any,
            origin_allowed: Callable[[str, dict[str, Any]], bool] | None) -> EngineFront | None:
    """Put Engine.IO's front before a Flask app's WSGI stack, for a python-socketio server's sessions.

    Servers in threading mode (the unit tests' Flask-SocketIO test client, which speaks no HTTP)
    keep python-engineio's own request handling.
    """
    eio = server.eio
    if eio.async_mode != "gevent":
        return None
    front = EngineFront(
        app.wsgi_app, eio, path,
        ping_interval_ms=settings.ping_interval_ms, ping_timeout_ms=settings.ping_timeout_ms,
        max_payload=settings.max_payload_bytes, origin_allowed=origin_allowed,
        cors_credentials=settings.cors_credentials, environ_extra={"flask.app": app},
    )
    app.wsgi_app = front
    # The WebSocket handler (nexus.server) asks before it answers 101.
    app.extensions["nexus.refuse_upgrade"] = front.refuse_upgrade
    return front
