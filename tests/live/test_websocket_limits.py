"""WebSocket size limits are enforced on frame headers, before a payload is buffered."""
from __future__ import annotations

import os
import socket
import struct

import pytest
import requests
import websocket

pytestmark = pytest.mark.live

LIMIT = 100_000


@pytest.fixture
def server(live_server):
    url, _seeder = live_server.database()
    return live_server.start(url, env={"SOCKETIO_MAX_PAYLOAD": str(LIMIT)})


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def open_socket(server) -> websocket.WebSocket:
    ws = websocket.create_connection(
        server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket", timeout=10
    )
    assert ws.recv().startswith("0{")  # engine.io open
    ws.send("40")
    # The namespace is connected (as a guest); the welcome may come before or after the "40".
    assert any(ws.recv().startswith("40") for _ in range(3))
    return ws


def frame_header(opcode: int, length: int, fin: bool = True, rsv1: bool = False) -> bytes:
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    if length < 126:
        return struct.pack("!BB", first, 0x80 | length) + b"\0\0\0\0"
    if length <= 0xFFFF:
        return struct.pack("!BBH", first, 0x80 | 126, length) + b"\0\0\0\0"
    return struct.pack("!BBQ", first, 0x80 | 127, length) + b"\0\0\0\0"  # zero mask: payload as is


def close_code(sock: socket.socket) -> int | None:
    """Read frames until a close frame; its status code (None if the connection just ended)."""
    data = b""
    sock.settimeout(10)
    while True:
        while len(data) >= 2:
            length = data[1] & 0x7F
            start = 2 + (2 if length == 126 else 8 if length == 127 else 0)
            if length >= 126 and len(data) < start:
                break
            if length == 126:
                length = struct.unpack("!H", data[2:4])[0]
            elif length == 127:
                length = struct.unpack("!Q", data[2:10])[0]
            if len(data) < start + length:
                break
            opcode, payload = data[0] & 0x0F, data[start:start + length]
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            data = data[start + length:]
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            return None
        if not chunk:
            return None
        data += chunk


def test_a_50_mb_frame_is_refused_with_1009_without_buffering_it(server):
    before = rss_bytes(server.process.pid)
    ws = open_socket(server)
    sock = ws.sock
    size = 50 * 1024 * 1024
    sock.sendall(frame_header(0x1, size))
    chunk = b"4" * 65536
    sent = 0
    try:
        while sent < size:
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert close_code(sock) == 1009
    growth = rss_bytes(server.process.pid) - before
    assert growth < 8 * 1024 * 1024, f"server memory grew by {growth / 2**20:.1f} MiB"
    assert requests.get(server.url + "/health", timeout=5).status_code == 200
    assert "message of more than 100000 bytes" in server.log()


def test_a_message_split_into_small_frames_counts_as_a_whole(server):
    ws = open_socket(server)
    sock = ws.sock
    part = b"x" * 40_000
    sock.sendall(frame_header(0x1, len(part), fin=False) + part)
    sock.sendall(frame_header(0x0, len(part), fin=False) + part)
    sock.sendall(frame_header(0x0, len(part), fin=True) + part)  # 120 kB in all
    assert close_code(sock) == 1009


def test_a_compressed_frame_is_a_protocol_error_and_never_inflated(server):
    before = rss_bytes(server.process.pid)
    ws = open_socket(server)
    sock = ws.sock
    import zlib

    bomb = zlib.compress(b"\0" * (200 * 1024 * 1024), 9)[2:-4]  # raw deflate, ~200 kB of it
    sock.sendall(frame_header(0x1, len(bomb), rsv1=True) + bomb)
    assert close_code(sock) in (1002, 1009)
    assert rss_bytes(server.process.pid) - before < 8 * 1024 * 1024
    ok = open_socket(server)  # the server is fine
    ok.close()


def test_a_message_under_the_limit_still_works(server):
    ws = open_socket(server)
    payload = '42["ping",{"timestamp":1,"pad":"' + "y" * 50_000 + '"}]'
    ws.send(payload)
    # The pong event arrives (other packets, such as engine.io pings, may come first).
    for _ in range(5):
        message = ws.recv()
        if message.startswith('42["pong"'):
            break
    else:
        raise AssertionError("no pong")
    ws.close()
    assert os.path.exists(f"/proc/{server.process.pid}")


def test_a_cross_site_websocket_is_refused_before_the_upgrade(server):
    url = server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url, timeout=5, origin="https://evil.example")
    assert refused.value.status_code == 403
    allowed = websocket.create_connection(url, timeout=5, origin="http://localhost:3000")
    assert allowed.recv().startswith("0{")
    allowed.close()
    same_site = websocket.create_connection(url, timeout=5, origin=server.url)
    assert same_site.recv().startswith("0{")
    same_site.close()
