"""Where Nexus hooks into python-socketio's packet handling (5.x private entry points).

Two things the public API does not offer: knowing whether an event came with an ack id,
and answering a malformed packet by closing that one connection quietly instead of a
traceback in the log per packet. Tests in tests/realtime and tests/live fail if a
python-socketio release moves these entry points.
"""
from __future__ import annotations

import logging
from typing import Any

from socketio import packet as socketio_packet

from nexus.realtime.acks import ack_requested_var

log = logging.getLogger("nexus.realtime")

# Socket.IO packet types 5 (BINARY_EVENT) and 6 (BINARY_ACK).
BINARY_PACKET_TYPES = ("5", "6")


def install(server: Any) -> None:
    """Wrap the server's per-event and per-message entry points."""
    _track_ack_requests(server)
    _check_events(server)
    _guard_malformed_packets(server)


class JsonPacket(socketio_packet.Packet):
    """python-socketio's packet for a server that sends JSON only (binary packets are refused, and
    Nexus never emits bytes): python-socketio would walk every payload looking for bytes, each
    entry of a 1,000-user online list included, for every packet it builds."""

    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        return False


class ProtocolViolation(ValueError):
    """A packet no Socket.IO client sends: the connection is closed."""


def _check_events(server: Any) -> None:
    # Refused before python-socketio looks at them: an event on a namespace this connection has not
    # joined (it would be dropped in silence), and an event without a name (it would raise inside
    # python-socketio, with a traceback and no answer).
    original = server._handle_event

    def checked(eio_sid: str, namespace: Any, id: Any, data: Any) -> Any:
        sid = server.manager.sid_from_eio_sid(eio_sid, namespace or "/")
        if sid is None or not server.manager.is_connected(sid, namespace or "/"):
            raise ProtocolViolation("event on a namespace the connection has not joined")
        if not isinstance(data, list) or not data:
            raise ProtocolViolation("event without a name")  # a name that is not text gets UNKNOWN_EVENT
        return original(eio_sid, namespace, id, data)

    server._handle_event = checked


def _track_ack_requests(server: Any) -> None:
    original = server._handle_event_internal

    def tracked(srv: Any, sid: str, eio_sid: str, data: Any, namespace: str, id: Any) -> Any:
        token = ack_requested_var.set(id is not None)
        try:
            return original(srv, sid, eio_sid, data, namespace, id)
        finally:
            ack_requested_var.reset(token)

    server._handle_event_internal = tracked


def _guard_malformed_packets(server: Any) -> None:
    original = server._handle_eio_message

    def guarded(eio_sid: str, data: Any) -> Any:
        try:
            if not isinstance(data, str) or data[:1] in BINARY_PACKET_TYPES:
                # Nexus's events are JSON: binary packets and attachments (whose count a client
                # chooses, and which python-socketio buffers without a bound) are refused.
                raise ProtocolViolation("binary packets are not accepted")
            return original(eio_sid, data)
        except (ValueError, IndexError, TypeError, KeyError, AttributeError) as exc:
            # Bad JSON (orjson's error is a ValueError), unknown packet types, events without a name.
            # The payload is the client's, and the session id a credential: log only the kind.
            reason = str(exc) if isinstance(exc, ProtocolViolation) else type(exc).__name__
            log.warning("malformed packet (%s); closing that connection", reason)
            server._binary_packet.pop(eio_sid, None)
            server.start_background_task(server.eio.disconnect, eio_sid)
            return None

    server._handle_eio_message = guarded
    server.eio.on("message", guarded)  # engine.io holds the handler it was given at construction


class PollingBodyLimit:
    """WSGI middleware: a long-polling POST over the size limit gets 413 before its body is read.

    engine.io refuses it too, but then closes the session waiting for a poll that never comes,
    holding the request (and its connection) until the ping timeout. Here the session is
    aborted instead, and the client told at once.
    """

    def __init__(self, app: Any, server: Any, path: str, max_bytes: int):
        self.app = app
        self.server = server
        self.path = "/" + path.strip("/")
        self.max_bytes = max_bytes

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("REQUEST_METHOD") == "POST" and environ.get("PATH_INFO", "").startswith(self.path):
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > self.max_bytes:
                self._abort_session(environ.get("QUERY_STRING", ""))
                log.warning("refused a long-polling body of %d bytes (limit %d)", length, self.max_bytes)
                body = b"Payload too large"
                start_response("413 Payload Too Large", [("Content-Type", "text/plain"),
                                                         ("Content-Length", str(len(body))), ("Connection", "close")])
                return [body]
        return self.app(environ, start_response)

    def _abort_session(self, query: str) -> None:
        from urllib.parse import parse_qs

        sid = (parse_qs(query).get("sid") or [None])[0]
        eio = self.server.eio
        if sid and sid in eio.sockets:
            eio.sockets[sid].close(wait=False, abort=True)
