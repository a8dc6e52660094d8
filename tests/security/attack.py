"""Tools of the security suite: servers per module, a control client, raw WebSocket frames, RSS.

Every attack in tests/security runs against a real Nexus process over loopback. Before the
attack a *control* client (another user, python-socketio over WebSocket) connects to the same
server and joins a room of its own; afterwards `Control.assert_unharmed()` proves the server
still serves it normally.
"""
from __future__ import annotations

import contextlib
import itertools
import secrets
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
import socketio
import websocket

from tests.support.cluster import Client
from tests.support.live import LiveServer, LiveServerFactory

WAIT = 10.0
MIB = 1024 * 1024
_names = itertools.count(1)


# -- servers -------------------------------------------------------------------------


@contextlib.contextmanager
def serving(
    base: Path, env: dict[str, str] | None = None, users: dict[str, dict[str, Any]] | None = None
) -> Iterator[LiveServer]:
    """One Nexus process on a fresh database, with `users` created; `server.seeder` mints tokens
    and `server.secret` is its JWT_SECRET."""
    factory = LiveServerFactory(base, secret=secrets.token_urlsafe(40))
    try:
        url, seeder = factory.database()
        for name, fields in (users or {}).items():
            seeder.user(name, **fields)
        server = factory.start(url, env=env)
        server.seeder = seeder
        server.secret = factory.secret
        server.database_url = url
        yield server
    finally:
        factory.stop_all()


def unique_name(prefix: str) -> str:
    return f"{prefix}{next(_names)}x{uuid.uuid4().hex[:4]}"


def health(server: LiveServer) -> int:
    return requests.get(server.url + "/health", timeout=5).status_code


def ws_url(server: LiveServer, query: str = "") -> str:
    return server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket" + query


# -- the control client ----------------------------------------------------------------


class Control:
    """A well-behaved user on the attacked server: connected before the attack, checked after it."""

    def __init__(self, server: LiveServer, name: str | None = None):
        self.server = server
        self.name = name or unique_name("control")
        server.seeder.user(self.name)
        self.client = Client(self.name)
        self.disconnected = threading.Event()
        self.client.sio.on("disconnect", lambda *_: self.disconnected.set())
        self.client.connect(server.url, server.seeder.token(self.name))
        self.room = "ctl-" + self.name
        joined = self.client.sio.call("join_room", self.room, timeout=WAIT)
        assert joined["success"] is True, joined

    def assert_unharmed(self) -> None:
        """Still connected, still on WebSocket, `ping` acked, `send_message` stored and delivered."""
        assert self.server.process.poll() is None, f"the server died:\n{self.server.log()[-3000:]}"
        sio = self.client.sio
        assert sio.connected and not self.disconnected.is_set(), f"{self.name} was disconnected"
        assert sio.transport() == "websocket"
        pong = sio.call("ping", timeout=WAIT)
        assert pong["success"] is True and isinstance(pong["timestamp"], int), pong
        content = "control " + uuid.uuid4().hex
        sent = sio.call("send_message", {"roomId": self.room, "content": content}, timeout=WAIT)
        assert sent["success"] is True and sent["message"]["content"] == content, sent
        delivered = self.client.wait_for("room_message", lambda message: message.get("content") == content)
        assert delivered["sender"]["username"] == self.name
        for unwanted in ("session_revoked", "rate_limit_exceeded", "error"):
            assert not self.client.received(unwanted), f"{self.name} got {unwanted}: {self.client.received(unwanted)}"
        assert health(self.server) == 200

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.sio.disconnect()


# -- python-socketio clients that keep their connect error --------------------------------


class Probe:
    """A python-socketio client that records events (on one namespace) and its `connect_error`."""

    def __init__(self, namespace: str = "/"):
        self.namespace = namespace
        self.sio = socketio.Client(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.connect_error: Any = None
        self.disconnected = threading.Event()
        self._cond = threading.Condition()
        self.sio.on("*", self._record, namespace=namespace)
        self.sio.on("connect_error", self._refused, namespace=namespace)
        self.sio.on("disconnect", lambda *_: self.disconnected.set(), namespace=namespace)

    def _record(self, event: str, *args: Any) -> None:
        with self._cond:
            self.events.append((event, args[0] if len(args) == 1 else list(args)))
            self._cond.notify_all()

    def _refused(self, data: Any) -> None:
        self.connect_error = data

    def connect(self, url: str, token: str | None = None, *, transports=("websocket",), **kwargs: Any) -> Probe:
        auth = kwargs.pop("auth", {"token": token} if token else None)
        self.sio.connect(
            url, auth=auth, namespaces=[self.namespace], transports=list(transports), wait_timeout=WAIT, **kwargs
        )
        return self

    def refused_with(self, url: str, token: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """Connect, expecting a refusal; the `connect_error` data ({code, message})."""
        try:
            self.connect(url, token, **kwargs)
        except socketio.exceptions.ConnectionError:
            pass
        else:
            raise AssertionError(f"the connection was accepted (events: {self.events})")
        assert isinstance(self.connect_error, dict), f"no connect_error data: {self.connect_error!r}"
        return self.connect_error["data"]

    def call(self, event: str, *args: Any) -> Any:
        return self.sio.call(event, args[0] if len(args) == 1 else (args or None), namespace=self.namespace,
                             timeout=WAIT)

    def received(self, event: str) -> list[Any]:
        with self._cond:
            return [data for name, data in self.events if name == event]

    def wait_for(self, event: str, match: Callable[[Any], bool] = lambda _: True, timeout: float = WAIT) -> Any:
        with self._cond:
            ok = self._cond.wait_for(lambda: any(n == event and match(d) for n, d in self.events), timeout)
            found = [d for n, d in self.events if n == event and match(d)]
        assert ok, f"no matching {event!r} within {timeout}s; got {self.events}"
        return found[0]

    def close(self) -> None:
        if self.sio.connected:
            # A polling client's disconnect waits out a long poll; the server has let it go already.
            threading.Thread(target=self.sio.disconnect, daemon=True).start()


# -- raw WebSocket frames -------------------------------------------------------------------


def open_raw(server: LiveServer, query: str = "", connect: str | None = "40", **options: Any) -> websocket.WebSocket:
    """A websocket-client connection through the Engine.IO open and (unless connect=None) a
    namespace CONNECT; the packets seen until the CONNECT answer are in `ws.seen`."""
    ws = websocket.create_connection(ws_url(server, query), timeout=WAIT, **options)
    opened = ws.recv()
    assert opened.startswith("0{"), opened
    ws.seen = []
    if connect is not None:
        ws.send(connect)
        answer = recv_until(ws, lambda packet: packet.startswith(("40", "44")))
        assert answer is not None and answer.startswith("40"), (answer, ws.seen)
    return ws


def recv_until(ws: websocket.WebSocket, match: Callable[[str], bool], timeout: float = WAIT) -> str | None:
    """The first packet that matches, answering Engine.IO pings; None when the connection closes
    (an Engine.IO close packet, a close frame or EOF). Fails after `timeout`."""
    deadline = time.monotonic() + timeout
    seen = getattr(ws, "seen", None)
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"nothing matching within {timeout}s; seen {seen}"
        ws.settimeout(remaining)
        try:
            packet = ws.recv()
        except websocket.WebSocketTimeoutException:
            raise AssertionError(f"nothing matching within {timeout}s; seen {seen}") from None
        except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
            return None
        if isinstance(packet, bytes):
            packet = packet.decode("utf-8", "replace")
        if seen is not None:
            seen.append(packet)
        if packet == "":  # a close frame
            return None
        if packet == "2":
            ws.send("3")
            continue
        if packet == "1":  # Engine.IO close
            return None
        if match(packet):
            return packet


def closes(ws: websocket.WebSocket, timeout: float = WAIT) -> bool:
    """True if the connection ends (whatever else arrives first) within `timeout`."""
    return recv_until(ws, lambda packet: False, timeout) is None


def frame_header(opcode: int, length: int, *, fin: bool = True, rsv1: bool = False) -> bytes:
    """A masked client frame header with a zero mask (so the payload goes as is)."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    if length < 126:
        return struct.pack("!BB", first, 0x80 | length) + b"\0\0\0\0"
    if length <= 0xFFFF:
        return struct.pack("!BBH", first, 0x80 | 126, length) + b"\0\0\0\0"
    return struct.pack("!BBQ", first, 0x80 | 127, length) + b"\0\0\0\0"


def frame(opcode: int, payload: bytes, **flags: Any) -> bytes:
    return frame_header(opcode, len(payload), **flags) + payload


def server_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The whole (unmasked) server frames at the start of `data`, as (opcode, payload), and the rest."""
    frames = []
    while len(data) >= 2:
        length = data[1] & 0x7F
        start = 2 + (2 if length == 126 else 8 if length == 127 else 0)
        if len(data) < start:
            break
        if length == 126:
            length = struct.unpack("!H", data[2:4])[0]
        elif length == 127:
            length = struct.unpack("!Q", data[2:10])[0]
        if len(data) < start + length:
            break
        frames.append((data[0] & 0x0F, data[start:start + length]))
        data = data[start + length:]
    return frames, data


def close_code(sock: socket.socket, timeout: float = WAIT) -> int | None:
    """Read raw frames until a close frame: its status code (None if the connection just ended)."""
    data = b""
    sock.settimeout(timeout)
    while True:
        frames, data = server_frames(data)
        for opcode, payload in frames:
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return None
        if not chunk:
            return None
        data += chunk


def ping_then_read_late(sock: socket.socket, buffer: bytes = b"", pings: int = 2000) -> tuple[set[int], bytes | None]:
    """On a WebSocket past its Engine.IO open and namespace CONNECT: `pings` pings with acks and the
    Engine.IO close packet sent without reading anything, then more frames the server will not
    handle (from a thread, until the server's end of the stream stops them), and only then reading
    to the end of the stream. Returns the ack ids read and the close frame's payload (None if none
    came). A reset while reading raises: it destroys what the client has not read yet."""
    sock.sendall(b"".join(frame(0x1, f'42{n}["ping"]'.encode()) for n in range(pings)) + frame(0x1, b"1"))

    def more() -> None:
        with contextlib.suppress(OSError):
            for n in range(pings, pings + 100):
                sock.sendall(frame(0x1, f'42{n}["ping",{{"pad":"{"x" * 8000}"}}]'.encode()))

    sending = threading.Thread(target=more, daemon=True)
    sending.start()
    acks, closing = set(), None
    sock.settimeout(WAIT)
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        frames, buffer = server_frames(buffer + chunk)
        for opcode, payload in frames:
            if opcode == 0x8:
                closing = payload
            elif opcode == 0x1 and payload.startswith(b"43"):
                acks.add(int(payload[2:payload.index(b"[")]))
    sending.join(WAIT)
    return acks, closing


def send_quietly(sock: socket.socket, data: bytes) -> bool:
    """Send; False once the server has closed the connection."""
    try:
        sock.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


# -- memory ----------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """The resident set size of a process, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")
