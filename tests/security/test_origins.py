"""Cross-site attacks: Socket.IO handshakes (long-polling and WebSocket) and REST CORS from origins
that are not configured. Only SOCKETIO_CORS_ORIGIN/FRONTEND_URL (and the server's own origin) pass;
clients that send no Origin (not browsers) are not cross-site and pass too."""
from __future__ import annotations

import json

import pytest
import requests
import socketio
import websocket

from tests.security.attack import WAIT, open_raw, recv_until, serving, ws_url

pytestmark = pytest.mark.live

ALLOWED = "https://app.example.com"
FOREIGN = [
    "https://evil.example",
    "null",  # sandboxed iframes, file:// pages
    "https://app.example.com.evil.example",  # the allowed origin as a prefix
    "http://app.example.com",  # another scheme
    "https://app.example.com:8443",  # another port
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"SOCKETIO_CORS_ORIGIN": ALLOWED + ",https://admin.example.com"}
    with serving(tmp_path_factory.mktemp("origins"), env) as running:
        yield running


def polling_handshake(server, origin: str | None) -> requests.Response:
    headers = {"Origin": origin} if origin else {}
    return requests.get(server.url + "/socket.io/?EIO=4&transport=polling", headers=headers, timeout=5)


@pytest.mark.parametrize("origin", FOREIGN)
def test_a_polling_handshake_from_a_foreign_origin_is_refused(server, control, origin):
    refused = polling_handshake(server, origin)
    assert refused.status_code == 400
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert '"sid"' not in refused.text  # no session was opened
    control.assert_unharmed()


@pytest.mark.parametrize("origin", FOREIGN)
def test_a_websocket_from_a_foreign_origin_is_refused_with_403_before_the_upgrade(server, control, origin):
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(ws_url(server), timeout=5, origin=origin)
    assert refused.value.status_code == 403  # not 101: the upgrade never happened
    assert f"refused a WebSocket from origin {origin!r}" in server.log()
    control.assert_unharmed()


def test_a_foreign_origin_cannot_upgrade_a_session_opened_without_origin(server, control):
    # A non-browser opens the session over long-polling, then a cross-site page tries to take it over.
    opened = polling_handshake(server, None)
    sid = json.loads(opened.text[opened.text.index("{"):])["sid"]
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(ws_url(server, "&sid=" + sid), timeout=5, origin="https://evil.example")
    assert refused.value.status_code == 403
    control.assert_unharmed()


def connect_from(server, origin: str, transport: str) -> socketio.Client:
    """python-socketio sending one Origin header (websocket-client adds its own unless told which)."""
    client = socketio.Client(reconnection=False, websocket_extra_options={"origin": origin})
    headers = {"Origin": origin} if transport == "polling" else {}
    client.connect(server.url, headers=headers, transports=[transport], wait_timeout=WAIT)
    return client


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_python_socketio_with_a_foreign_origin_cannot_connect(server, control, transport):
    with pytest.raises(socketio.exceptions.ConnectionError):
        connect_from(server, "https://evil.example", transport)
    control.assert_unharmed()


@pytest.mark.parametrize("origin", [ALLOWED, "https://admin.example.com"])
def test_allowed_origins_connect_over_both_transports(server, origin):
    handshake = polling_handshake(server, origin)
    assert handshake.status_code == 200
    assert handshake.headers["Access-Control-Allow-Origin"] == origin
    ws = open_raw(server, origin=origin)
    ws.send('42["ping"]')
    assert recv_until(ws, lambda packet: packet.startswith('42["pong"')) is not None
    ws.close()
    client = connect_from(server, origin, "websocket")
    try:
        assert client.transport() == "websocket"
        assert client.call("ping", timeout=WAIT)["success"] is True
    finally:
        client.disconnect()


def test_the_servers_own_origin_and_no_origin_are_accepted(server):
    # Non-browser clients send no Origin; the dashboard is served from the server's own origin.
    assert polling_handshake(server, None).status_code == 200
    assert polling_handshake(server, server.url).status_code == 200
    for origin in (None, server.url):
        ws = open_raw(server, **({"origin": origin} if origin else {"suppress_origin": True}))
        ws.send('42["ping"]')
        assert recv_until(ws, lambda packet: packet.startswith('42["pong"')) is not None
        ws.close()


def test_rest_cors_answers_only_allowed_origins(server, control):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    for origin in ("https://evil.example", "null", "https://app.example.com.evil.example"):
        foreign = requests.options(server.url + "/api/auth/login", headers={"Origin": origin, **preflight}, timeout=5)
        assert "Access-Control-Allow-Origin" not in foreign.headers
        assert "Access-Control-Allow-Credentials" not in foreign.headers
        simple = requests.get(server.url + "/api/auth/me", headers={"Origin": origin}, timeout=5)
        assert "Access-Control-Allow-Origin" not in simple.headers
    allowed = requests.options(server.url + "/api/auth/login", headers={"Origin": ALLOWED, **preflight}, timeout=5)
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    control.assert_unharmed()


def test_a_wildcard_origin_is_refused_in_production(live_server):
    url, _seeder = live_server.database()
    with pytest.raises(RuntimeError) as refused:
        live_server.start(url, env={"NEXUS_ENV": "production", "SOCKETIO_CORS_ORIGIN": "*",
                                    "NEXUS_HOST": "127.0.0.1"})
    assert "SOCKETIO_CORS_ORIGIN" in str(refused.value)
    assert "configuration error" in str(refused.value)
