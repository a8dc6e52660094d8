"""Nexus's WebSocket transport in the real server: heartbeats from the shared pinger, dead peers, upgrades."""
from __future__ import annotations

import time

import pytest
import socketio
import websocket

pytestmark = pytest.mark.live

FAST_HEARTBEAT = {"SOCKETIO_PING_INTERVAL": "1000", "SOCKETIO_PING_TIMEOUT": "1000"}


@pytest.fixture
def server(live_server):
    url, seeder = live_server.database()
    seeder.user("alice")
    server = live_server.start(url, env=FAST_HEARTBEAT)
    server.seeder = seeder
    return server


def test_heartbeats_keep_an_answering_client_connected_on_websocket(server):
    client = socketio.Client(reconnection=False)
    pings = []
    client.connect(server.url, auth={"token": server.seeder.token("alice")}, transports=["websocket"], wait_timeout=10)
    try:
        assert client.transport() == "websocket"
        original = client.eio._receive_packet

        def counting(pkt):
            if pkt.packet_type == 2:  # engine.io PING, sent by the server every interval
                pings.append(time.monotonic())
            return original(pkt)

        client.eio._receive_packet = counting
        time.sleep(4.5)  # several intervals (1 s) and timeouts (1 s): a client without pings is dropped
        assert client.connected
        assert len(pings) >= 3, pings
        assert client.call("ping", timeout=5)["success"] is True
    finally:
        client.disconnect()


def test_a_client_that_stops_answering_heartbeats_is_dropped(server):
    ws = websocket.create_connection(
        server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket", timeout=10
    )
    try:
        assert ws.recv().startswith("0{")  # engine.io OPEN
        ws.send('40{"token":"%s"}' % server.seeder.token("alice"))
        started = time.monotonic()
        frames = []
        while True:  # never answer a PING
            try:
                frame = ws.recv()
            except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
                break
            if not frame:
                break
            frames.append(frame)
            assert time.monotonic() - started < 15, "the server kept a silent client"
        assert any(frame == "2" for frame in frames), "the server never sent a heartbeat"
        assert any(frame.startswith("40") for frame in frames)  # it did connect
        assert time.monotonic() - started < 10
    finally:
        ws.close()
    assert "Traceback" not in server.log()
