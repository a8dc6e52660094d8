"""Socket.IO v5 packets: where Nexus hooks into python-socketio's packet handling (5.x private entry points).

python-socketio keeps the programming model (namespaces, rooms, emit, the managers); what its
public API does not offer is done here, in one place:

- CONNECT: a namespace that does not exist is answered `{"message": "Invalid namespace"}`, a second
  CONNECT to a namespace already joined closes the connection, and a namespace's greeting (its
  welcome, online list, catch-up) goes out after the CONNECT packet, never before it;
- binary events and acks (packet types 5 and 6) within bounds: at most `max_attachments`
  attachments, the packet and its attachments together within `max_payload`, the attachments
  before any other packet of that connection, placeholders that point at an attachment;
- whether an event came with an ack id, and whether it carried binary content;
- a malformed packet closes that one connection with one warning line, never a traceback;
- a connection that joins no namespace within the connect timeout is closed.

tests/protocol/test_namespaces.py fails if a python-socketio release moves these entry points.
"""
from __future__ import annotations

import collections
import logging
import re
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from engineio import packet as eio_packet
from socketio import packet as socketio_packet

from nexus.logs import log_event
from nexus.realtime import jsonenc


log = logging.getLogger("nexus.realtime")

# Socket.IO packet types 5 (BINARY_EVENT) and 6 (BINARY_ACK), as the first character of a packet.
BINARY_PACKET_TYPES = ("5", "6")
INVALID_NAMESPACE = {"message": "Invalid namespace"}
# The longest attachment count a header may carry ("<count>-"): more digits than any bound allows.
_COUNT_DIGITS = 6
#: How long a connection closed for a violation has what it still sends dropped without a word.
CLOSE_LINGER_S = 5.0
#: The head of a text EVENT packet: type 2, an optional namespace up to its comma, an optional ack id
#: (python-socketio reads at most 100 digits; more is an error).
_EVENT_HEAD = re.compile(r"2(?:(/[^,]*),)?([0-9]{0,100})")

binary_event_var: ContextVar[bool] = ContextVar("nexus_binary_event", default=False)
#: Whether the event being handled came with an ack id (python-socketio does not tell handlers).
ack_requested_var: ContextVar[bool] = ContextVar("nexus_ack_requested", default=False)


def event_has_binary() -> bool:
    """True while handling an event that arrived as a binary packet (its arguments hold bytes)."""
    return binary_event_var.get()


class ProtocolViolation(ValueError):
    """A packet no Socket.IO client sends: the connection is closed."""


class JsonPacket(socketio_packet.Packet):
    """python-socketio's packet, encoding JSON first: python-socketio would walk every payload
    looking for bytes (each entry of a 1,000-user online list included) for every packet it
    builds. Nexus's own events never carry bytes, so the walk happens only when JSON encoding
    fails, and a payload that does hold bytes goes out as a binary packet with attachments."""

    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        return False

    def encode(self) -> Any:
        try:
            return super().encode()
        except TypeError:  # orjson's error for a type it cannot write (bytes among them)
            binary = {socketio_packet.EVENT: socketio_packet.BINARY_EVENT,
                      socketio_packet.ACK: socketio_packet.BINARY_ACK}.get(self.packet_type)
            if binary is None or not holds_bytes(self.data):
                raise
            self.packet_type = binary
            return super().encode()


@dataclass(frozen=True)
class Limits:
    """The bounds the packet layer holds every connection to."""

    max_attachments: int = 10
    max_payload: int = 1_000_000
    connect_timeout_s: float = 45.0
    #: Namespace CONNECTs (and, separately, ends of connections) handled at once; the others wait
    #: for a turn, in arrival order.
    connects_in_flight: int = 32


@dataclass
class _PendingBinary:
    """A binary packet whose attachments are still arriving."""

    packet: Any
    expected: int
    budget: int
    attachments: list[bytes] = field(default_factory=list)


def install(server: Any, limits: Limits | None = None) -> "PacketLayer":
    """Wrap the server's per-connection, per-packet and per-event entry points."""
    layer = PacketLayer(server, limits or Limits())
    layer.install()
    return layer


class PacketLayer:
    """Nexus's handling of Socket.IO packets for one python-socketio server."""

    def __init__(self, server: Any, limits: Limits):
        self.server = server
        self.limits = limits
        self.pending: dict[str, _PendingBinary] = {}
        # Connections closed for a violation: what they still send until the close lands is dropped,
        # so one attack writes one log line.
        self.closing: set[str] = set()
        self.deadlines = ConnectDeadlines(server, limits.connect_timeout_s)
        # A CONNECT's work (token, presence, welcome, online list) comes in many short turns between
        # database round trips: thousands at once (a reconnect storm) would put every open
        # connection's events behind all of their turns. (threading's semaphore is gevent's once
        # the server is monkey-patched, and a real one for the test client.)
        self.connect_turns = threading.BoundedSemaphore(limits.connects_in_flight)
        # Likewise for the ends of connections (presence, the namespaces' clean-up): thousands of
        # clients gone at once (a network blip) take turns.
        self.disconnect_turns = threading.BoundedSemaphore(limits.connects_in_flight)

    def install(self) -> None:
        """Put this layer's handlers in place of python-socketio's (and engine.io's table of them)."""
        server = self.server
        self._handle_message = server._handle_eio_message
        self._handle_connect = server._handle_connect
        self._handle_event = server._handle_event
        self._handle_event_internal = server._handle_event_internal
        self._handle_ack = server._handle_ack
        self._eio_connect = server._handle_eio_connect
        self._eio_disconnect = server._handle_eio_disconnect
        server._handle_eio_message = self.on_message
        server._handle_connect = self.on_connect
        server._handle_event = self.on_event
        server._handle_event_internal = self.on_event_internal
        server._handle_ack = self.on_ack
        server._handle_eio_disconnect = self.on_eio_disconnect
        # engine.io holds the handlers it was given at construction.
        server.eio.on("message", self.on_message)
        server.eio.on("connect", self.on_eio_connect)
        server.eio.on("disconnect", self.on_eio_disconnect)

    # -- engine.io connections ----------------------------------------------------------

    def on_eio_connect(self, eio_sid: str, environ: Any, *rest: Any) -> Any:
        """An Engine.IO session opened: python-socketio keeps its environ; the connect timeout starts."""
        result = self._eio_connect(eio_sid, environ, *rest)
        if result is not False and eio_sid in self.server.eio.sockets:  # a real connection, not a test client's
            self.deadlines.watch(eio_sid)
        return result

    def on_eio_disconnect(self, eio_sid: str, *rest: Any) -> Any:
        """An Engine.IO session ended: its unfinished binary packet and its deadline go with it."""
        self.pending.pop(eio_sid, None)
        self.deadlines.forget(eio_sid)
        with self.disconnect_turns:
            return self._eio_disconnect(eio_sid, *rest)

    # -- packets --------------------------------------------------------------------------

    def on_message(self, eio_sid: str, data: Any) -> None:
        """One Engine.IO message: a Socket.IO packet or an attachment of a binary packet."""
        if eio_sid in self.closing:
            return
        try:
            pending = self.pending.get(eio_sid)
            if pending is not None:
                self._attachment(eio_sid, pending, data)
            elif not isinstance(data, str):
                raise ProtocolViolation("binary data without a binary packet announcing it")
            elif data[:1] in BINARY_PACKET_TYPES:
                self._binary_packet(eio_sid, data)
            elif data[:1] == "2":
                self._event(eio_sid, data)
            else:
                self._handle_message(eio_sid, data)
        except (ValueError, IndexError, TypeError, KeyError, AttributeError) as exc:
            # Bad JSON (orjson's error is a ValueError), unknown packet types, events without a name.
            # The payload is the client's, and the session id a credential: log only the kind.
            reason = str(exc) if isinstance(exc, ProtocolViolation) else type(exc).__name__
            self.close(eio_sid, f"malformed packet ({reason})")

    def close(self, eio_sid: str, why: str) -> None:
        """Close one connection for a protocol violation, with one warning line."""
        if eio_sid in self.closing:
            return
        sock = self.server.eio.sockets.get(eio_sid)
        if sock is not None and sock.closed:
            return  # closing already: nothing more to say
        log.warning("%s; closing that connection", why)
        self.pending.pop(eio_sid, None)
        self.closing.add(eio_sid)
        # Not from inside engine.io's own message handling: the close runs once this packet is done.
        self.server.start_background_task(self._disconnect, eio_sid)

    def _disconnect(self, eio_sid: str) -> None:
        try:
            self.server.eio.disconnect(eio_sid)
        except Exception as exc:  # the connection may be ending on its own meanwhile
            log.debug("closing a connection failed (%s)", type(exc).__name__)
        # Frames the client sent before the close landed are still read for a moment: dropped quietly.
        self.server.sleep(CLOSE_LINGER_S)
        self.closing.discard(eio_sid)

    def _binary_packet(self, eio_sid: str, data: str) -> None:
        dash = data.find("-", 1, 2 + _COUNT_DIGITS)
        count = data[1:dash] if dash > 1 else ""
        if not (count.isascii() and count.isdigit()):
            raise ProtocolViolation("binary packet without a valid attachment count")
        expected = int(count)
        if expected > self.limits.max_attachments:
            raise ProtocolViolation(
                f"binary packet announcing {expected} attachments (limit {self.limits.max_attachments})")
        budget = self.limits.max_payload - len(data)
        if budget < 0:
            raise ProtocolViolation("binary packet over the payload limit")
        pkt = self.server.packet_class(encoded_packet=data)
        namespace = pkt.namespace or "/"
        if not self._joined(eio_sid, namespace):
            raise ProtocolViolation("binary packet on a namespace the connection has not joined")
        if not isinstance(pkt.data, list) or (pkt.packet_type == socketio_packet.BINARY_EVENT and not pkt.data):
            raise ProtocolViolation("binary packet whose arguments are not an array")
        if pkt.packet_type == socketio_packet.BINARY_ACK and pkt.id is None:
            raise ProtocolViolation("binary ack without an id")
        if expected == 0:
            self._dispatch_binary(eio_sid, pkt, [])
        else:
            self.pending[eio_sid] = _PendingBinary(pkt, expected, budget)

    def _attachment(self, eio_sid: str, pending: _PendingBinary, data: Any) -> None:
        if not isinstance(data, (bytes, bytearray)):
            raise ProtocolViolation("a packet arrived before the attachments of a binary packet")
        pending.budget -= len(data)
        if pending.budget < 0:
            raise ProtocolViolation("binary packet and its attachments over the payload limit")
        pending.attachments.append(data if type(data) is bytes else bytes(data))
        if len(pending.attachments) == pending.expected:
            del self.pending[eio_sid]
            self._dispatch_binary(eio_sid, pending.packet, pending.attachments)

    def _dispatch_binary(self, eio_sid: str, pkt: Any, attachments: list[bytes]) -> None:
        data = reconstruct(pkt.data, attachments)
        if pkt.packet_type == socketio_packet.BINARY_EVENT:
            token = binary_event_var.set(True)
            try:
                self.server._handle_event(eio_sid, pkt.namespace, pkt.id, data)
            finally:
                binary_event_var.reset(token)
        else:
            self.server._handle_ack(eio_sid, pkt.namespace, pkt.id, data)

    def _joined(self, eio_sid: str, namespace: str) -> bool:
        manager = self.server.manager
        sid = manager.sid_from_eio_sid(eio_sid, namespace)
        return sid is not None and manager.is_connected(sid, namespace)

    # -- CONNECT ---------------------------------------------------------------------------

    def on_connect(self, eio_sid: str, namespace: Any, data: Any) -> None:
        """A namespace CONNECT: refused for an unknown namespace, answered by python-socketio (the
        connect handler, then CONNECT or CONNECT_ERROR), then the namespace greets the client."""
        server = self.server
        namespace = namespace or "/"
        if not self._known(namespace):
            server._send_packet(eio_sid, server.packet_class(
                socketio_packet.CONNECT_ERROR, data=INVALID_NAMESPACE, namespace=namespace))
            return
        if server.manager.sid_from_eio_sid(eio_sid, namespace) is not None:
            raise ProtocolViolation("CONNECT to a namespace the connection has joined already")
        with self.connect_turns:
            self._connect(eio_sid, namespace, data)

    def _connect(self, eio_sid: str, namespace: str, data: Any) -> None:
        server = self.server
        sock = server.eio.sockets.get(eio_sid)
        if sock is not None and sock.closed:
            return  # gone while it waited for its turn
        if server.manager.sid_from_eio_sid(eio_sid, namespace) is not None:  # joined while it waited
            raise ProtocolViolation("CONNECT to a namespace the connection has joined already")
        self._handle_connect(eio_sid, namespace, data)
        sid = server.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or not server.manager.is_connected(sid, namespace):
            return  # refused
        self.deadlines.forget(eio_sid)
        greet = getattr(server.namespace_handlers.get(namespace), "greet", None)
        if greet is not None:
            try:
                greet(sid, data)
            except Exception:  # a bug on the server's side, not the client's packet: the connection stands
                log_event(log, "greeting_failed", "greeting a new connection failed", level=logging.ERROR,
                          exc_info=True, ns=namespace, sid=sid)

    def _known(self, namespace: str) -> bool:
        server = self.server
        return (namespace in server.namespace_handlers or namespace in server.handlers
                or server.namespaces == "*" or namespace in server.namespaces)

    # -- events and acks -------------------------------------------------------------------

    def _event(self, eio_sid: str, data: str) -> None:
        """A text EVENT packet, the hot path: from the frame to the namespace's handler and from its
        result to the ACK with one JSON decode and one encode, without python-socketio's packet
        object, dispatch chain and per-event log call. Namespaces that are not Nexus's (they have
        no `handle_event`) and events with a decorator handler go through python-socketio."""
        head = _EVENT_HEAD.match(data)
        if head is None:
            raise ProtocolViolation("event without a name")  # "2/ns" with nothing after it
        namespace, digits = head.group(1, 2)
        namespace = namespace.partition("?")[0] if namespace else "/"
        body = data[head.end():]
        if body[:1].isdigit():
            raise ProtocolViolation("ack id is too long")
        args = jsonenc.loads(body) if body else None
        ack_id = int(digits) if digits else None
        server = self.server
        manager = server.manager
        sid = manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or not manager.is_connected(sid, namespace):
            raise ProtocolViolation("event on a namespace the connection has not joined")
        if type(args) is not list or not args:
            raise ProtocolViolation("event without a name")
        event = args[0]
        handle = getattr(server.namespace_handlers.get(namespace), "handle_event", None)
        decorated = server.handlers.get(namespace)
        if handle is None or (decorated and event in decorated):
            self._handle_event(eio_sid, namespace, ack_id, args)
            return
        token = ack_requested_var.set(ack_id is not None)
        try:
            result = handle(event, sid, args[1:])
        finally:
            ack_requested_var.reset(token)
        if ack_id is not None:
            self.send_ack(eio_sid, namespace, ack_id, result)

    def send_ack(self, eio_sid: str, namespace: str, ack_id: int, result: Any) -> None:
        """Answer an event's ack id with a handler's result (a tuple is several arguments, None none),
        encoded once; a result holding bytes goes out as a binary ack."""
        server = self.server
        data = [] if result is None else list(result) if type(result) is tuple else [result]
        try:
            body = jsonenc.dumps(data)
        except TypeError:  # bytes (or another type JSON cannot hold): python-socketio's binary packet
            server._send_packet(eio_sid, server.packet_class(
                socketio_packet.ACK, namespace=namespace, id=ack_id, data=data))
            return
        prefix = "3" if namespace == "/" else f"3{namespace},"
        server._send_eio_packet(eio_sid, eio_packet.Packet(eio_packet.MESSAGE, f"{prefix}{ack_id}{body}"))

    def on_event(self, eio_sid: str, namespace: Any, id: Any, data: Any) -> Any:
        """An EVENT (or a completed BINARY_EVENT), checked before python-socketio dispatches it."""
        # Refused before python-socketio looks at them: an event on a namespace this connection has not
        # joined (it would be dropped in silence), and an event without a name (it would raise inside
        # python-socketio, with a traceback and no answer).
        if not self._joined(eio_sid, namespace or "/"):
            raise ProtocolViolation("event on a namespace the connection has not joined")
        if not isinstance(data, list) or not data:
            raise ProtocolViolation("event without a name")  # a name that is not text gets UNKNOWN_EVENT
        return self._handle_event(eio_sid, namespace, id, data)

    def on_event_internal(self, srv: Any, sid: str, eio_sid: str, data: Any, namespace: str, id: Any) -> Any:
        """Dispatch an event with whether the client asked for an ack known to the handler."""
        token = ack_requested_var.set(id is not None)
        try:
            return self._handle_event_internal(srv, sid, eio_sid, data, namespace, id)
        finally:
            ack_requested_var.reset(token)

    def on_ack(self, eio_sid: str, namespace: Any, id: Any, data: Any) -> None:
        """A client's ack: for a callback the server is waiting on, else dropped without a word."""
        namespace = namespace or "/"
        if not self._joined(eio_sid, namespace):
            raise ProtocolViolation("ack on a namespace the connection has not joined")
        if id is None or not isinstance(data, list):
            raise ProtocolViolation("ack without an id or whose arguments are not an array")
        manager = self.server.manager
        sid = manager.sid_from_eio_sid(eio_sid, namespace)
        if id not in manager.callbacks.get(sid, ()):
            return  # late (the server stopped waiting) or never asked for
        self._handle_ack(eio_sid, namespace, id, data)


def holds_bytes(data: Any) -> bool:
    """True if bytes are anywhere in a payload (iterative: nesting depth costs no recursion)."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, (bytes, bytearray)):
            return True
        if isinstance(value, (list, tuple)):
            stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
    return False


def reconstruct(data: list[Any], attachments: list[bytes]) -> list[Any]:
    """Put each attachment where its placeholder is, in place; a placeholder that points at no
    attachment is a ProtocolViolation. Iterative, so nesting depth costs no recursion."""
    count = len(attachments)
    stack: list[Any] = [data]
    while stack:
        node = stack.pop()
        for key, value in (enumerate(node) if type(node) is list else node.items()):
            kind = type(value)
            if kind is dict:
                if value.get("_placeholder") is True:
                    num = value.get("num")
                    if type(num) is not int or not 0 <= num < count:
                        raise ProtocolViolation("placeholder that points at no attachment")
                    node[key] = attachments[num]
                else:
                    stack.append(value)
            elif kind is list:
                stack.append(value)
    return data


class ConnectDeadlines:
    """Closes connections whose first namespace CONNECT has not succeeded within the connect
    timeout, as socket.io does (a refused CONNECT does not count).

    One background task per server; connections are watched in the order they open, so the first
    deadline in the queue is always the next one due.
    """

    def __init__(self, server: Any, timeout_s: float):
        self.server = server
        self.timeout_s = timeout_s
        self.queue: collections.deque[tuple[float, str]] = collections.deque()
        self.waiting: set[str] = set()
        self.running = False

    def watch(self, eio_sid: str) -> None:
        """A connection opened: it has the timeout to join a namespace."""
        self.waiting.add(eio_sid)
        self.queue.append((time.monotonic() + self.timeout_s, eio_sid))
        if not self.running:
            self.running = True
            self.server.start_background_task(self._run)

    def _run(self) -> None:
        try:
            while self.queue:
                deadline, eio_sid = self.queue[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self.server.sleep(wait)
                    continue
                self.queue.popleft()
                if eio_sid in self.waiting:
                    self.waiting.discard(eio_sid)
                    log.info("closing a connection that joined no namespace within %d ms",
                             round(self.timeout_s * 1000))
                    # A close can wait on its client (a long-polling session's last GET): never here.
                    self.server.start_background_task(self._close, eio_sid)
        finally:
            self.running = False

    def _close(self, eio_sid: str) -> None:
        try:
            self.server.eio.disconnect(eio_sid)
        except Exception as exc:  # the connection may be ending on its own
            log.debug("closing an idle connection failed (%s)", type(exc).__name__)

    def forget(self, eio_sid: str) -> None:
        """The connection joined a namespace, or closed."""
        self.waiting.discard(eio_sid)
