"""Nexus's WebSocket frames and writes (nexus.server, nexus.protocol.websocket) against the RFC and a real socket pair."""
from __future__ import annotations

import os
import socket
import struct

import gevent
import pytest
from engineio import packet as eio_packet
from geventwebsocket.websocket import Header, Stream

from nexus.protocol.websocket import DirectOutput, frame_of
from nexus.server import LimitedWebSocket, frame_header, unmask
from tests.security.attack import server_frames


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536, 70000])
def test_frame_headers_follow_the_rfc(length):
    header = frame_header(length)
    assert header[0] == 0x81  # FIN + text
    if length < 126:
        assert header[1] == length and len(header) == 2
    elif length < 65536:
        assert header[1] == 126 and struct.unpack("!H", header[2:4])[0] == length
    else:
        assert header[1] == 127 and struct.unpack("!Q", header[2:10])[0] == length


@pytest.mark.parametrize("length", [0, 1, 3, 4, 5, 127, 1000, 65537])
def test_unmask_matches_gevent_websockets_byte_by_byte_version(length):
    payload, mask = os.urandom(length), os.urandom(4)
    header = Header(length=length)
    header.mask = mask
    reference = header.unmask_payload(payload)
    assert unmask(payload, mask) == bytes(reference)
    assert unmask(unmask(payload, mask), mask) == payload


def test_a_broadcast_packet_is_framed_once_for_all_its_recipients():
    pkt = eio_packet.Packet(eio_packet.MESSAGE, '2["room_message",{"content":"é"}]')
    frame = frame_of(pkt)
    assert frame is frame_of(pkt)
    body = '42["room_message",{"content":"é"}]'.encode()
    assert frame == frame_header(len(body)) + body


class _Handler:
    """What LimitedWebSocket takes from gevent-websocket's handler."""

    def __init__(self, sock):
        self.socket = sock
        self.rfile = sock.makefile("rb")
        self.application = None


def _pair(server_sndbuf: int | None = None):
    from gevent import socket as gsocket

    server_side, client_side = gsocket.socketpair()
    if server_sndbuf:
        server_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, server_sndbuf)
        client_side.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, server_sndbuf)
    handler = _Handler(server_side)
    ws = LimitedWebSocket({}, Stream(handler), handler)
    return ws, client_side


def _read_frames(sock, count):
    data = b""
    frames = []
    while len(frames) < count:
        chunk = sock.recv(1 << 20)
        assert chunk, "connection closed early"
        found, data = server_frames(data + chunk)
        frames += [payload for _, payload in found]
    return frames


def test_writes_that_the_kernel_cannot_take_at_once_arrive_whole_and_in_order():
    ws, peer = _pair(server_sndbuf=4096)
    messages = [(f"{i:05d}" * 4000).encode() for i in range(40)]  # 20 kB each: far past the buffers
    output = DirectOutput(ws)
    for body in messages:
        output.put(eio_packet.Packet(eio_packet.MESSAGE, body.decode()))
    assert ws._backlog, "the writes should have outrun the socket buffer"
    reader = gevent.spawn(_read_frames, peer, len(messages))
    frames = reader.get(timeout=10)
    assert frames == [b"4" + body for body in messages]
    assert ws.flushed(5) and ws._backlog_bytes == 0


def test_a_peer_that_stops_reading_is_dropped_once_its_backlog_passes_the_limit():
    ws, peer = _pair(server_sndbuf=4096)
    ws.max_backlog_bytes = 256 * 1024
    output = DirectOutput(ws)
    body = "x" * 50_000
    for _ in range(40):  # 2 MB to a peer that reads nothing
        output.put(eio_packet.Packet(eio_packet.MESSAGE, body))
    assert output.closed, "the connection should have been given up"
    assert ws._backlog_bytes == 0  # what was waiting is released, not kept
    peer.settimeout(5)
    received = b""
    while True:  # the server shut the connection down: the peer reads to the end
        chunk = peer.recv(1 << 20)
        if not chunk:
            break
        received += chunk
    assert len(received) < 2_000_000
