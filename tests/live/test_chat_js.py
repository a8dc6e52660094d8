"""Chat between the official JavaScript client and a python-socketio client, over a real server."""
from __future__ import annotations

import threading

import pytest
import socketio

from tests.live.test_js_client import run
from tests.support import services

pytestmark = [pytest.mark.live, pytest.mark.node]


@pytest.fixture
def server(live_server):
    services.require("node")
    url, seeder = live_server.database()
    seeder.user("alice")
    seeder.user("bob")
    server = live_server.start(url)
    server.seeder = seeder
    return server


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_js_and_python_users_chat_and_each_sees_the_others_message_once(server, transport):
    bob = socketio.Client(reconnection=False)
    got: list[dict] = []
    replied = threading.Event()

    def on_message(message):
        got.append(message)
        if message["sender"]["username"] == "alice" and not replied.is_set():
            replied.set()
            bob.emit("send_message", {"roomId": "lounge", "content": "hello from python", "type": "text"})

    bob.on("room_message", on_message)
    bob.connect(server.url, auth={"token": server.seeder.token("bob")}, transports=["websocket"], wait_timeout=10)
    try:
        assert bob.call("join_room", "lounge", timeout=5)["success"] is True
        report = run(
            server,
            {"auth": {"token": server.seeder.token("alice")}, "transports": [transport]},
            [
                {"emit": "join_room", "args": [{"room": "lounge"}], "ack": True},
                {"emit": "send_message", "args": [{"roomId": "lounge", "content": "hello from js", "type": "text"}],
                 "ack": True},
                {"waitFor": "room_message", "count": 2},
                {"sleep": 300},
            ],
        )
    finally:
        bob.disconnect()
    join_ack, send_ack = report["acks"]
    assert join_ack["success"] is True and join_ack["memberCount"] == 2
    assert send_ack["success"] is True and send_ack["message"]["content"] == "hello from js"
    seen_by_js = [event[1] for event in report["events"] if event[0] == "room_message"]
    assert [m["content"] for m in seen_by_js] == ["hello from js", "hello from python"]
    assert [m["content"] for m in got] == ["hello from js", "hello from python"]
    assert seen_by_js[0] == send_ack["message"] == got[0]
    assert report["transport"] == transport


def test_js_client_gets_validation_errors_and_catch_up(server):
    python = socketio.Client(reconnection=False)
    python.connect(server.url, auth={"token": server.seeder.token("bob")}, transports=["websocket"], wait_timeout=10)
    try:
        python.call("join_room", "lounge", timeout=5)
        seqs = [
            python.call("send_message", {"roomId": "lounge", "content": f"m{i}", "type": "text"}, timeout=5)["message"]["seq"]
            for i in range(5)
        ]
    finally:
        python.disconnect()
    report = run(
        server,
        {"auth": {"token": server.seeder.token("alice")}, "transports": ["websocket"]},
        [
            {"emit": "send_message", "args": [{"roomId": "lounge", "content": ""}], "ack": True},
            {"emit": "join_room", "args": [{"room": "lounge", "since": seqs[1]}], "ack": True},
        ],
    )
    bad, joined = report["acks"]
    assert bad["error"]["code"] == "VALIDATION_ERROR"
    assert joined["catchUp"]["complete"] is True and joined["catchUp"]["count"] == 3
    replayed = [event[1]["seq"] for event in report["events"] if event[0] == "room_message"]
    assert replayed == seqs[2:]
