"""The real server driven by the official JavaScript client (socket.io-client from npm)."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.support import services
from tests.support.live import LiveServerFactory

pytestmark = [pytest.mark.live, pytest.mark.node]
SCRIPT = services.ROOT / "tests" / "js" / "client.mjs"
TRANSPORTS = ["websocket", "polling"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    services.require("node")
    factory = LiveServerFactory(tmp_path_factory.mktemp("js"), secret="js-client-secret-" + "k" * 32)
    try:
        url, seeder = factory.database()
        seeder.user("alice", department="sales")
        server = factory.start(url)
        server.seeder = seeder
        yield server
    finally:
        factory.stop_all()


def run(server, options=None, steps=(), timeout_ms=8000) -> dict:
    scenario = {"url": server.url, "options": options or {}, "steps": list(steps), "timeoutMs": timeout_ms}
    result = subprocess.run(
        [shutil.which("node"), str(SCRIPT), json.dumps(scenario)],
        cwd=services.ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_ms / 1000 + 10,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def events(report: dict, name: str) -> list:
    return [event[1] if len(event) == 2 else event[1:] for event in report["events"] if event[0] == name]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_connect_with_token_in_auth(server, transport):
    report = run(server, {"auth": {"token": server.seeder.token("alice")}, "transports": [transport]})
    assert report["connected"] is True
    assert report["openTransport"] == report["transport"] == transport
    assert "upgradedTo" not in report
    [welcome] = events(report, "connected")
    assert welcome["socketId"] == report["socketId"]
    assert welcome["guest"] is False
    assert welcome["user"]["username"] == "alice" and welcome["user"]["department"] == "sales"


def test_default_transports_upgrade_to_websocket(server):
    report = run(server, {"auth": {"token": server.seeder.token("alice")}}, [{"waitUpgrade": True}], timeout_ms=6000)
    # The client starts on polling; ending anywhere but on websocket is a silent fall-back.
    assert report.get("timedOut") is not True, report
    assert report["openTransport"] == "polling"
    assert report["upgradedTo"] == report["transport"] == "websocket"


def test_token_in_query_string(server):
    token = server.seeder.token("alice")
    report = run(server, {"query": {"token": token}, "transports": ["websocket"]})
    assert events(report, "connected")[0]["user"]["username"] == "alice"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_guest(server, transport):
    report = run(server, {"transports": [transport]})
    [welcome] = events(report, "connected")
    assert welcome["guest"] is True and welcome["user"] is None
    assert report["transport"] == transport


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("token", ["garbage", "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIiwidHlwZSI6ImFjY2VzcyJ9."])
def test_bad_token_is_refused_with_code(server, transport, token):
    report = run(server, {"auth": {"token": token}, "transports": [transport]})
    assert report["connected"] is False
    assert report["connectError"] == {
        "message": "The token is not valid.",
        "data": {"code": "INVALID_TOKEN", "message": "The token is not valid."},
    }


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ping_ack_and_pong(server, transport):
    report = run(
        server,
        {"auth": {"token": server.seeder.token("alice")}, "transports": [transport]},
        [{"emit": "ping", "ack": True}, {"emit": "ping", "args": [{"timestamp": 123}]}, {"waitFor": "pong", "count": 2}],
    )
    [ack] = report["acks"]
    assert ack["success"] is True and isinstance(ack["timestamp"], int) and ack["serverTime"].endswith("Z")
    first, second = events(report, "pong")
    assert first["timestamp"] == ack["timestamp"]  # ping(cb) also gets its pong
    assert second["clientTimestamp"] == 123 and isinstance(second["timestamp"], int)
    assert report["transport"] == transport


def test_unknown_event_errors(server):
    report = run(
        server,
        {"transports": ["websocket"]},
        [{"emit": "no_such_thing", "args": [{}], "ack": True}, {"emit": "no_such_thing"}, {"waitFor": "error"}],
    )
    assert report["acks"] == [
        {"success": False, "error": {"code": "UNKNOWN_EVENT", "message": "Unknown event 'no_such_thing'."}}
    ]
    assert events(report, "error") == [
        {"code": "UNKNOWN_EVENT", "message": "Unknown event 'no_such_thing'.", "event": "no_such_thing"}
    ]
