"""The real server process driven by python-socketio's client, over WebSocket and long-polling."""
from __future__ import annotations

import threading

import pytest
import requests
import socketio

pytestmark = pytest.mark.live


class Recorder:
    """A python-socketio client that keeps every event it receives."""

    def __init__(self) -> None:
        self.client = socketio.Client(reconnection=False)
        self.events: list[tuple[str, object]] = []
        self.connect_error: object = None
        self._arrived = threading.Condition()
        self.client.on("*", self._on_event)
        self.client.on("connect_error", self._on_connect_error)

    def _on_event(self, event, *args):
        with self._arrived:
            self.events.append((event, args[0] if len(args) == 1 else list(args)))
            self._arrived.notify_all()

    def _on_connect_error(self, data):
        self.connect_error = data

    def wait_for(self, event: str, timeout: float = 5.0):
        with self._arrived:
            ok = self._arrived.wait_for(lambda: any(name == event for name, _ in self.events), timeout)
        assert ok, f"no {event!r} within {timeout}s; got {self.events}"
        return next(data for name, data in self.events if name == event)

    def connect(self, url: str, *, transports, **kwargs) -> None:
        self.client.connect(url, transports=transports, wait_timeout=10, **kwargs)


@pytest.fixture
def server(live_server):
    url, seeder = live_server.database()
    seeder.user("alice", department="sales")
    seeder.user("root", role="admin")
    server = live_server.start(url)
    server.seeder = seeder
    return server


@pytest.fixture
def recorder():
    made = []

    def make():
        made.append(Recorder())
        return made[-1]

    yield make
    for item in made:
        if item.client.connected:
            # python-socketio's client waits out a long-poll (up to the ping interval) when it
            # disconnects from the polling transport; the server has already let it go.
            threading.Thread(target=item.client.disconnect, daemon=True).start()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_connect_with_token_gets_welcome_and_stays_on_its_transport(server, recorder, transport):
    client = recorder()
    client.connect(server.url, transports=[transport], auth={"token": server.seeder.token("alice")})

    welcome = client.wait_for("connected")
    assert client.client.transport() == transport
    assert welcome["socketId"] == client.client.get_sid()
    assert welcome["guest"] is False
    assert welcome["user"]["username"] == "alice"
    assert welcome["user"]["department"] == "sales"
    assert welcome["serverTime"].endswith("Z")


def test_default_transports_upgrade_to_websocket(server, recorder):
    client = recorder()
    client.connect(server.url, transports=None, auth={"token": server.seeder.token("alice")})
    client.wait_for("connected")
    # python-socketio's client upgrades during connect; a silent stay on polling is a failure.
    assert client.client.transport() == "websocket"


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_guest_connection(server, recorder, transport):
    client = recorder()
    client.connect(server.url, transports=[transport])
    welcome = client.wait_for("connected")
    assert welcome["guest"] is True
    assert welcome["user"] is None


def test_token_in_query_string(server, recorder):
    client = recorder()
    client.connect(server.url + "?token=" + server.seeder.token("alice"), transports=["websocket"])
    assert client.wait_for("connected")["user"]["username"] == "alice"


@pytest.mark.parametrize("transport", ["websocket"])  # polling refusals: tests/live/test_js_client.py
@pytest.mark.parametrize(
    ("token", "code"),
    [("not-a-jwt", "INVALID_TOKEN"), ("eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.", "INVALID_TOKEN")],
)
def test_bad_token_is_refused_with_code(server, recorder, transport, token, code):
    client = recorder()
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(server.url, transports=[transport], auth={"token": token})
    assert client.connect_error == {
        "message": "The token is not valid.",
        "data": {"code": code, "message": "The token is not valid."},
    }


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_ping_answers_by_ack_and_by_pong(server, recorder, transport):
    client = recorder()
    client.connect(server.url, transports=[transport], auth={"token": server.seeder.token("alice")})
    client.wait_for("connected")

    ack = client.client.call("ping", timeout=5)  # ping(callback): answered by the ack
    assert ack["success"] is True and isinstance(ack["timestamp"], int)

    client.client.emit("ping", {"timestamp": 1234})  # ping({timestamp}) -> pong
    pongs = []
    for _ in range(50):
        pongs = [data for name, data in client.events if name == "pong" and data.get("clientTimestamp") == 1234]
        if pongs:
            break
        threading.Event().wait(0.1)
    assert pongs and isinstance(pongs[0]["timestamp"], int)
    assert client.client.transport() == transport


def test_logout_revokes_the_token_for_new_connections(server, recorder):
    login = requests.post(
        server.url + "/api/auth/login", json={"username": "alice", "password": "correct-horse-1"}, timeout=5
    ).json()
    assert login["success"] is True
    token = login["accessToken"]
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.post(server.url + "/api/auth/logout", headers=headers, timeout=5).json() == {"success": True}

    client = recorder()
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(server.url, transports=["websocket"], auth={"token": token})
    assert client.connect_error["data"]["code"] == "TOKEN_REVOKED"


def test_handshake_from_another_origin_is_refused(server):
    handshake = server.url + "/socket.io/?EIO=4&transport=polling"
    allowed = requests.get(handshake, headers={"Origin": "http://localhost:3000"}, timeout=5)
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    same_origin = requests.get(handshake, headers={"Origin": server.url}, timeout=5)
    assert same_origin.status_code == 200
    refused = requests.get(handshake, headers={"Origin": "https://evil.example"}, timeout=5)
    assert refused.status_code == 400
    assert "Access-Control-Allow-Origin" not in refused.headers


def test_malformed_packets_do_not_hurt_the_server(server, recorder):
    import websocket

    ws_url = server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    for garbage in ('42["ping"', "42{nope}", "4" + "9" * 400, "7", '42[{"a": 1}]', '420[123]', "\x00\xff"):
        raw = websocket.create_connection(ws_url, timeout=5)
        raw.recv()  # engine.io open
        raw.send("40")
        raw.recv()  # namespace connect
        raw.send(garbage)
        raw.close()
    client = recorder()
    client.connect(server.url, transports=["websocket"], auth={"token": server.seeder.token("alice")})
    assert client.client.call("ping", timeout=5)["success"] is True
    assert requests.get(server.url + "/health", timeout=5).status_code == 200
    log = server.log()
    assert "Traceback" not in log, log


def test_logout_closes_the_sockets_of_that_token_only(server, recorder):
    def login() -> str:
        body = {"username": "alice", "password": "correct-horse-1"}
        return requests.post(server.url + "/api/auth/login", json=body, timeout=5).json()["accessToken"]

    logged_out, other = login(), login()
    tabs = []
    for token, transport in ((logged_out, "websocket"), (logged_out, "polling"), (other, "websocket")):
        tab = recorder()
        tab.connect(server.url, transports=[transport], auth={"token": token})
        tab.wait_for("connected")
        tabs.append(tab)
    closed = threading.Event()
    tabs[0].client.on("disconnect", lambda *_: closed.set())
    headers = {"Authorization": f"Bearer {logged_out}"}
    assert requests.post(server.url + "/api/auth/logout", headers=headers, timeout=5).json() == {"success": True}
    for tab in tabs[:2]:
        assert tab.wait_for("session_revoked") == {"reason": "logged out"}
    assert closed.wait(5) and not tabs[0].client.connected
    assert tabs[2].client.connected and tabs[2].client.call("ping", timeout=5)["success"]
    assert not any(name == "session_revoked" for name, _ in tabs[2].events)
