"""How operators run Nexus: `nexus serve` on first start, the Procfile's gunicorn command, and clean logs."""
from __future__ import annotations

import re
import threading

import pytest
import requests
import socketio

from tests.support.live import procfile_command

pytestmark = pytest.mark.live


def connect(url: str, transports, **kwargs) -> socketio.Client:
    client = socketio.Client(reconnection=False)
    welcome = threading.Event()
    client.on("connected", lambda data: welcome.set())
    client.connect(url, transports=transports, wait_timeout=10, **kwargs)
    assert welcome.wait(5), "no connected event"
    return client


def test_first_start_creates_demo_users_once_and_they_can_log_in(live_server):
    url, _ = live_server.database()
    first = live_server.start(url, env={"NEXUS_DEMO_USERS": "1"})
    found = re.findall(r"Created demo (\w+): username=(\S+) password=(\S+)", first.log())
    credentials = {role: (user, password) for role, user, password in found}
    assert set(credentials) == {"admin", "user"}
    username, password = credentials["admin"]
    login = requests.post(first.url + "/api/auth/login", json={"username": username, "password": password}, timeout=5)
    assert login.json()["user"]["role"] == "admin"
    first.stop()

    second = live_server.start(url, env={"NEXUS_DEMO_USERS": "1"})
    assert "Created demo" not in second.log()


def test_procfile_web_command_serves_websocket_for_real(live_server):
    command = procfile_command("web")
    assert "-w 1" in command and "--no-control-socket" in command and "$PORT" in command
    url, seeder = live_server.database()
    seeder.user("alice")
    server = live_server.start(url, kind="procfile")

    client = connect(server.url, transports=None, auth={"token": seeder.token("alice")})
    try:
        # gunicorn must hand the upgrade to gevent-websocket: staying on polling is a failure
        assert client.transport() == "websocket"
        assert client.call("ping", timeout=5)["success"] is True
    finally:
        client.disconnect()
    ws_only = connect(server.url, transports=["websocket"])
    assert ws_only.transport() == "websocket"
    ws_only.disconnect()


def test_procfile_release_command_migrates(live_server, tmp_path):
    assert procfile_command("release") == "nexus db upgrade"


def test_tokens_never_reach_the_logs(live_server):
    url, seeder = live_server.database()
    seeder.user("alice", password="correct-horse-1")
    # The most verbose logging there is: protocol debugging and access lines.
    server = live_server.start(url, env={"LOG_LEVEL": "DEBUG", "DEBUG": "socketio:*,engineio:*"})
    token = seeder.token("alice")
    for transports in (["polling"], ["websocket"]):
        client = connect(server.url + "?token=" + token, transports=transports)
        client.call("ping", timeout=5)
        client.emit("authenticate", token)
        threading.Thread(target=client.disconnect, daemon=True).start()
    connect(server.url, transports=["websocket"], auth={"token": token}).disconnect()
    login = requests.post(
        server.url + "/api/auth/login", json={"username": "alice", "password": "correct-horse-1"}, timeout=5
    ).json()
    requests.get(server.url + "/api/auth/me", headers={"Authorization": "Bearer " + login["accessToken"]}, timeout=5)
    requests.get(server.url + "/health?token=" + token, timeout=5)

    log = server.log()
    assert "Received packet" in log  # protocol debugging really was on
    assert "[redacted" in log  # ... and something needed scrubbing
    for secret in (token, login["accessToken"], login["refreshToken"], token.split(".")[1], token.split(".")[2]):
        assert secret not in log
    assert "correct-horse-1" not in log


def test_procfile_web_drains_on_sigterm_within_the_grace(live_server):
    import signal
    import time

    url, seeder = live_server.database()
    seeder.user("alice")
    server = live_server.start(url, kind="procfile", env={"NEXUS_SHUTDOWN_GRACE_S": "4"})
    client = connect(server.url, transports=["websocket"], auth={"token": seeder.token("alice")})
    notices: list = []
    client.on("server_shutdown", notices.append)
    assert client.call("ping", timeout=5)["success"]
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)  # what Heroku and systemd send
    assert server.process.wait(15) == 0
    assert time.monotonic() - started < 4 + 3
    assert notices == [{"reconnectAfterMs": 1000}]
    assert "shutdown complete" in server.log()
