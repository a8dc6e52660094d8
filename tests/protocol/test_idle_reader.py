"""Idle WebSockets watched by the event loop (nexus.server.LimitedWebSocket.watch), over real sockets
to a real server: an idle connection holds no greenlet, frames are still read and handled (whole,
in pieces, fragmented), what one event's handlers write to its socket goes out in one send, and
connections that end (close frame, EOF, reset, the server's close, a shutdown) leave nothing behind.

The server is Nexus with a test-only `/_test/counts` route (tests/protocol/idle_server.py) that
reports the greenlets, event-loop watchers, file descriptors and connections the process holds.
"""
from __future__ import annotations

import base64
import os
import secrets
import signal
import socket
import struct
import sys
import time
from typing import Callable

import gevent
import pytest
import requests
from gevent.event import Event

from geventwebsocket.websocket import Stream

from nexus.server import ConnectionPool, LimitedWebSocket, frame_header
from tests.protocol.eio import handshake, ws_open
from tests.security.attack import WAIT, frame, open_raw, ping_then_read_late, recv_until, server_frames
from tests.support import services
from tests.support.live import LiveServer, LiveServerFactory


#: Greenlets that may come and go beside the connections (timers, the heartbeat, the request asking).
SLACK = 4


def start_server(base, env: dict[str, str] | None = None) -> tuple[LiveServer, LiveServerFactory]:
    factory = LiveServerFactory(base, secret=secrets.token_urlsafe(40))
    url, seeder = factory.database()
    seeder.user("raw")
    port = services.free_port()
    server_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NEXUS_", "SOCKETIO_", "REDIS_"))},
        "PORT": str(port), "DATABASE_URL": url, "JWT_SECRET": factory.secret, "NEXUS_ENV": "development",
        "NEXUS_INSTANCE_PATH": str(base / "instance"), "NEXUS_INSTANCE_ID": "idle-0",
        "NEXUS_DEMO_USERS": "0", "PYTHONUNBUFFERED": "1", "SOCKETIO_RATE_LIMIT_MAX_REQUESTS": "100000",
        **(env or {}),
    }
    server_env.pop("MESSAGE_QUEUE_URL", None)
    running = LiveServer([sys.executable, "-m", "tests.protocol.idle_server", "serve"], server_env, port,
                         base / "server.log")
    factory.servers.append(running)
    running.wait_ready()
    running.seeder = seeder
    return running, factory


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running, factory = start_server(tmp_path_factory.mktemp("idle"))
    try:
        yield running
    finally:
        factory.stop_all()


def counts(server) -> dict[str, int]:
    answer = requests.get(server.url + "/_test/counts", headers={"Connection": "close"}, timeout=WAIT)
    assert answer.status_code == 200, answer.text
    return answer.json()


def settled(server, check: Callable[[dict[str, int]], bool], timeout: float = 10) -> dict[str, int]:
    """The counts once `check` holds (asserting it does within `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        now = counts(server)
        if check(now):
            return now
        assert time.monotonic() < deadline, f"never settled: {now}"
        time.sleep(0.1)


def quiet_counts(server) -> dict[str, int]:
    """The counts once connections of earlier tests are gone and the greenlet count holds still."""
    return steady(server, lambda now: now["watched"] == 0 and now["readers"] == 0)


def steady(server, check: Callable[[dict[str, int]], bool]) -> dict[str, int]:
    """The counts once `check` holds and the greenlet and descriptor counts hold still."""
    previous = settled(server, check)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = counts(server)
        if check(now) and now["greenlets"] == previous["greenlets"] and now["fds"] == previous["fds"]:
            return now
        previous = now
    return previous


# -- raw WebSocket frames ------------------------------------------------------------------------


class Raw:
    """A raw client socket through the WebSocket upgrade: masked frames out, server frames in."""

    def __init__(self, server, query: str = "", receive_buffer: int | None = None):
        host, port = server.url.removeprefix("http://").split(":")
        self.sock = socket.socket()
        if receive_buffer is not None:  # before connecting: the window it announces follows it
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(WAIT)
        self.sock.connect((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /socket.io/?EIO=4&transport=websocket{query} HTTP/1.1\r\nHost: x\r\n"
                           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            assert chunk, data
            data += chunk
        head, _, self.buffer = data.partition(b"\r\n\r\n")
        self.pending: list[str] = []  # text frames read and not yet expected
        assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, text: str) -> None:
        self.sock.sendall(frame(0x1, text.encode()))

    def frames(self) -> list[tuple[int, bytes]]:
        """The whole frames in the buffer, taken out of it."""
        found, self.buffer = server_frames(self.buffer)
        return found

    def recv_once(self, timeout: float = WAIT) -> list[str]:
        """The text frames completed by one recv (one read of what has arrived)."""
        self.sock.settimeout(timeout)
        chunk = self.sock.recv(1 << 20)
        assert chunk, "the connection ended"
        self.buffer += chunk
        return [payload.decode() for opcode, payload in self.frames() if opcode == 0x1]

    def expect(self, match: Callable[[str], bool], timeout: float = WAIT) -> str:
        """The first text frame that matches (those before it are skipped, Engine.IO pings answered)."""
        deadline = time.monotonic() + timeout
        self.pending += [payload.decode() for opcode, payload in self.frames() if opcode == 0x1]
        while True:
            while self.pending:
                text = self.pending.pop(0)
                if text == "2":
                    self.send("3")
                elif match(text):
                    return text
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no matching frame in time"
            self.pending += self.recv_once(remaining)

    def drain(self, quiet_s: float = 0.5) -> None:
        """Read until nothing arrives for `quiet_s` (the welcome and presence that follow a connect)."""
        while True:
            try:
                texts = self.recv_once(quiet_s)
            except socket.timeout:
                return
            for text in texts:
                if text == "2":
                    self.send("3")

    def ended(self, timeout: float = WAIT) -> bool:
        """True if the server ends the connection (end of stream or a reset) within `timeout`."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        return False

    def close(self) -> None:
        self.sock.close()


def connected(server, receive_buffer: int | None = None) -> Raw:
    """A raw WebSocket that opened Engine.IO and joined "/" as a guest, past its welcome."""
    raw = Raw(server, receive_buffer=receive_buffer)
    assert raw.expect(lambda text: text.startswith("0{")).startswith("0{")
    raw.send("40")
    assert raw.expect(lambda text: text.startswith(("40", "44"))).startswith("40{")
    raw.drain()
    return raw


# -- corked writes ------------------------------------------------------------------------------


class _Handler:
    """What LimitedWebSocket takes from gevent-websocket's handler."""

    def __init__(self, sock):
        self.socket = sock
        self.rfile = sock.makefile("rb")
        self.application = None


def _socket_pair() -> tuple[LimitedWebSocket, socket.socket]:
    from gevent import socket as gsocket

    server_side, client_side = gsocket.socketpair()
    handler = _Handler(server_side)
    return LimitedWebSocket({}, Stream(handler), handler), client_side


class _CountingSocket:
    """A socket that records each send."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sends: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sends.append(bytes(data))
        return self.sock.send(data)


def _text(body: bytes) -> bytes:
    return frame_header(len(body)) + body


def test_what_the_corking_greenlet_writes_goes_out_in_one_send_when_uncorked():
    ws, peer = _socket_pair()
    ws._raw = counting = _CountingSocket(ws._raw)
    sends = counting.sends
    ws.cork()
    ws.send_frame(b'431[{"success":true}]', 0x1)
    ws.send_frame(b'42["pong",{}]', 0x1)
    assert sends == []  # held
    ws.uncork()
    assert sends == [_text(b'431[{"success":true}]') + _text(b'42["pong",{}]')]
    peer.settimeout(5)
    assert peer.recv(1 << 16) == sends[0]


def test_a_write_from_another_greenlet_while_corked_goes_out_at_once_after_what_is_held():
    ws, peer = _socket_pair()
    ws.cork()
    ws.send_frame(b"first", 0x1)
    gevent.spawn(ws.send_frame, b"second", 0x1).join(5)  # a broadcast from elsewhere: not held back
    peer.settimeout(5)
    assert peer.recv(1 << 16) == _text(b"first") + _text(b"second")
    ws.send_frame(b"third", 0x1)
    ws.close()  # a close while corked: what is held, then the close frame
    received = b""
    while len(received) < len(_text(b"third")) + 4:
        received += peer.recv(1 << 16)
    assert received == _text(b"third") + bytes((0x88, 2)) + struct.pack("!H", 1000)
    ws.uncork()  # nothing left to write
    peer.setblocking(False)
    try:
        assert peer.recv(1 << 16) == b""
    except BlockingIOError:
        pass


# -- the gunicorn worker's pool -------------------------------------------------------------------


def test_a_connection_handed_over_to_the_event_loop_keeps_its_pool_slot_until_it_ends():
    pool = ConnectionPool(2)
    release = Event()

    def serve(hand_over: bool) -> None:
        if hand_over:
            assert pool.hand_over(gevent.getcurrent())
        release.wait()

    handlers = [pool.spawn(serve, True), pool.spawn(serve, False)]
    gevent.sleep(0)
    assert pool.full()
    release.set()
    gevent.joinall(handlers, timeout=5)
    assert len(pool) == 0 and pool.handed_over == 1  # the watched connection still holds its slot
    assert pool.free_count() == 1 and not pool.full()
    release.clear()
    third = pool.spawn(serve, False)
    gevent.sleep(0)
    assert pool.full() and pool.wait_available(timeout=0.01) == 0
    pool.handed_over_ended()
    assert pool.handed_over == 0 and pool.free_count() == 1
    assert pool.wait_available(timeout=0.01) == 1  # the server's accept loop sees the slot free
    assert not pool.hand_over(gevent.getcurrent())  # not one of the pool's greenlets
    release.set()
    third.join(5)
    assert pool.free_count() == 2


# -- idle connections ---------------------------------------------------------------------------


@pytest.mark.live
def test_idle_websockets_hold_no_greenlet_and_are_still_served(server):
    before = quiet_counts(server)
    fresh = [open_raw(server) for _ in range(30)]  # WebSocket from the handshake
    upgraded = []
    for _ in range(10):  # long-polling sessions moved onto a WebSocket
        sid, _ = handshake(server)
        ws = ws_open(server, sid)
        ws.send("2probe")
        assert ws.recv() == "3probe"
        ws.send("5")
        ws.send("40")
        assert recv_until(ws, lambda packet: packet.startswith("40")) is not None
        upgraded.append(ws)
    sockets = fresh + upgraded
    try:
        # Once what connecting started (the welcome, presence) is over.
        idle = steady(server, lambda now: now["watched"] - before["watched"] == len(sockets) and now["readers"] == 0)
        assert idle["sessions"] - before["sessions"] == len(sockets)
        assert idle["greenlets"] - before["greenlets"] <= SLACK, (before, idle)
        assert len(sockets) <= idle["watchers"] - before["watchers"] <= len(sockets) + SLACK, (before, idle)
        for index, ws in enumerate(sockets):  # each one is still read and answered
            ws.send(f'42{index}["ping"]')
            assert recv_until(ws, lambda packet, i=index: packet.startswith(f"43{i}[")) is not None
        after = settled(server, lambda now: now["readers"] == 0)
        assert after["greenlets"] - before["greenlets"] <= SLACK, (before, after)
    finally:
        for ws in sockets:
            ws.close()
    settled(server, lambda now: now["watched"] == before["watched"] and now["sessions"] == before["sessions"]
            and now["fds"] <= before["fds"])


@pytest.mark.live
def test_an_acks_and_the_events_its_handler_writes_go_out_in_one_send(server):
    raw = connected(server)
    try:
        for index in range(20):
            raw.send(f'42{index}["ping",{{"timestamp":{index}}}]')
            texts = raw.recv_once()
            while texts == ["2"]:  # Engine.IO's heartbeat came first
                raw.send("3")
                texts = raw.recv_once()
            acks = [text for text in texts if text.startswith(f"43{index}[")]
            pongs = [text for text in texts if text.startswith('42["pong"')]
            assert acks and pongs, f"the ack and the pong came in separate reads: {texts}"
            assert f'"clientTimestamp":{index}' in pongs[0]
    finally:
        raw.close()


@pytest.mark.live
def test_frames_that_arrive_in_pieces_or_fragmented_are_handled_whole(server):
    raw = connected(server)
    try:
        whole = frame(0x1, b'421["ping"]')
        for cut in (1, 2, 5, len(whole) - 1):  # a header, a mask or a payload cut short
            raw.sock.sendall(whole[:cut])
            time.sleep(0.2)
            raw.sock.sendall(whole[cut:])
            assert raw.expect(lambda text: text.startswith("431[")).startswith("431[")
        first, rest = b'422["pi', b'ng"]'
        raw.sock.sendall(frame(0x1, first, fin=False))
        time.sleep(0.2)
        raw.sock.sendall(frame(0x9, b"ping?"))  # a control frame between the fragments
        raw.sock.sendall(frame(0x0, rest))
        assert raw.expect(lambda text: text.startswith("432[")).startswith("432[")
        several = b"".join(frame(0x1, b'42%d["ping"]' % i) for i in range(10, 40))
        raw.sock.sendall(several)  # many frames in one read: all handled, in order
        acked = []
        while len(acked) < 30:
            text = raw.expect(lambda text: text.startswith("43"))
            acked.append(int(text[2:text.index("[")]))
        assert acked == list(range(10, 40))
    finally:
        raw.close()


@pytest.mark.live
def test_connections_that_end_leave_no_greenlet_watcher_or_descriptor(server):
    before = quiet_counts(server)
    raws = [connected(server) for _ in range(24)]
    settled(server, lambda now: now["watched"] - before["watched"] == len(raws))
    for index, raw in enumerate(raws):
        kind = index % 4
        if kind == 0:  # a close frame: the server answers it and closes
            raw.sock.sendall(frame(0x8, struct.pack("!H", 1000)))
            assert raw.ended()
        elif kind == 1:  # Engine.IO's close packet
            raw.send("1")
            assert raw.ended()
        elif kind == 2:  # half a frame, then the end of the stream
            raw.sock.sendall(frame(0x1, b'42["ping"]')[:5])
            time.sleep(0.05)
            raw.sock.shutdown(socket.SHUT_WR)
            assert raw.ended()
        else:  # a reset
            raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
    after = settled(server, lambda now: now["watched"] == before["watched"]
                    and now["sessions"] == before["sessions"] and now["readers"] == 0
                    and now["fds"] <= before["fds"] and now["watchers"] <= before["watchers"])
    assert after["greenlets"] - before["greenlets"] <= SLACK, (before, after)


def test_a_client_that_reads_late_still_gets_all_that_was_sent_before_the_server_closed(server):
    # A small receive window and nothing read while the client's Engine.IO close packet ends the
    # session, and more frames behind it that the server will not handle: the answers sent before
    # the end, then the close frame and the end of the stream, still reach the client. Closing over
    # the unread frames would reset the connection, and the reset would destroy the answers the
    # client had not read yet.
    raw = connected(server, receive_buffer=4096)
    acks, closing = ping_then_read_late(raw.sock, raw.buffer, pings=2000)  # a reset fails the test
    raw.close()
    assert len(acks) == 2000
    assert closing is not None and struct.unpack("!H", closing[:2])[0] == 1000


@pytest.mark.live
def test_a_session_the_server_ends_closes_its_idle_websocket(tmp_path):
    running, factory = start_server(tmp_path, {"SOCKETIO_PING_INTERVAL": "500", "SOCKETIO_PING_TIMEOUT": "500"})
    try:
        before = quiet_counts(running)
        raw = Raw(running)
        assert raw.expect(lambda text: text.startswith("0{")).startswith("0{")
        settled(running, lambda now: now["watched"] == before["watched"] + 1)
        # The client never answers Engine.IO's PING: the session times out, and its socket goes.
        assert raw.ended(10)
        raw.close()
        settled(running, lambda now: now["watched"] == before["watched"] and now["sessions"] == before["sessions"]
                and now["fds"] <= before["fds"])
    finally:
        factory.stop_all()


@pytest.mark.live
def test_a_shutdown_ends_idle_websockets_and_the_process_in_time(tmp_path):
    running, factory = start_server(tmp_path, {"NEXUS_SHUTDOWN_GRACE_S": "4"})
    try:
        raws = [connected(running) for _ in range(10)]
        settled(running, lambda now: now["watched"] >= len(raws))
        started = time.monotonic()
        os.killpg(running.process.pid, signal.SIGTERM)
        for raw in raws:
            assert raw.ended(6), "an idle WebSocket outlived the shutdown"
            raw.close()
        assert running.process.wait(8) == 0
        assert time.monotonic() - started < 6
    finally:
        factory.stop_all()
