"""The server the official protocol suites run against (tests/protocol/reference_server.py) keeps
doing what they expect of it, in both of its modes: a few of their exchanges, over WebSocket."""
from __future__ import annotations

import os
import secrets
import sys
from typing import Iterator

import pytest
import websocket

from tests.security.attack import recv_until
from tests.support import services
from tests.support.live import LiveServer, LiveServerFactory

pytestmark = pytest.mark.live


def _reference(tmp_path, suite: str) -> Iterator[LiveServer]:
    factory = LiveServerFactory(tmp_path, secret=secrets.token_urlsafe(40))
    try:
        url, _ = factory.database()
        port = services.free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("NEXUS_", "SOCKETIO_", "REDIS_"))},
            "PORT": str(port), "DATABASE_URL": url, "JWT_SECRET": factory.secret, "NEXUS_ENV": "development",
            "NEXUS_INSTANCE_PATH": str(tmp_path / "instance"), "NEXUS_DEMO_USERS": "0", "PYTHONUNBUFFERED": "1",
            "SOCKETIO_PING_INTERVAL": "300", "SOCKETIO_PING_TIMEOUT": "200", "REFERENCE_SUITE": suite,
        }
        env.pop("MESSAGE_QUEUE_URL", None)
        running = LiveServer([sys.executable, "-m", "tests.protocol.reference_server", "serve"], env, port,
                             tmp_path / "server.log")
        factory.servers.append(running)
        running.wait_ready()
        yield running
    finally:
        factory.stop_all()


@pytest.fixture
def socketio_reference(tmp_path) -> Iterator[LiveServer]:
    yield from _reference(tmp_path, "socket.io")


@pytest.fixture
def engineio_reference(tmp_path) -> Iterator[LiveServer]:
    yield from _reference(tmp_path, "engine.io")


def _open(server: LiveServer, path: str) -> websocket.WebSocket:
    ws = websocket.create_connection(server.url.replace("http://", "ws://") + path + "?EIO=4&transport=websocket",
                                     timeout=5)
    opened = ws.recv()
    assert opened.startswith("0{") and '"pingInterval":300' in opened, opened
    return ws


def test_the_socketio_mode_greets_echoes_and_acks_on_both_namespaces(socketio_reference):
    ws = _open(socketio_reference, "/socket.io/")
    ws.send('40{"token":"123"}')
    assert recv_until(ws, lambda p: p.startswith("40")).startswith('40{"sid":')
    assert recv_until(ws, lambda p: p.startswith("42")) == '42["auth",{"token":"123"}]'
    ws.send('42["message",1,"2",{"3":[true]}]')
    assert recv_until(ws, lambda p: p.startswith("42")) == '42["message-back",1,"2",{"3":[true]}]'
    ws.send('42456["message-with-ack",1,"2",{"3":[false]}]')
    assert recv_until(ws, lambda p: p.startswith("43")) == '43456[1,"2",{"3":[false]}]'
    ws.send("40/custom,")
    assert recv_until(ws, lambda p: p.startswith("40/custom,")).startswith('40/custom,{"sid":')
    assert recv_until(ws, lambda p: p.startswith("42/custom,")) == '42/custom,["auth",{}]'
    ws.close()


def test_the_engineio_mode_echoes_every_message(engineio_reference):
    ws = _open(engineio_reference, "/engine.io/")
    ws.send("4hello")
    assert recv_until(ws, lambda p: p.startswith("4")) == "4hello"
    ws.send_binary(b"\x01\x02\x03")
    while (frame := ws.recv()) == "2":  # a PING (every 300 ms) may come first: answered
        ws.send("3")
    assert frame == b"\x01\x02\x03"
    ws.close()
