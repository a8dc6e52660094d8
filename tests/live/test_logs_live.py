"""Production logs are data: the Procfile's server (gunicorn) in production mode writes one JSON
object per line — gunicorn's own lines, the access lines and Nexus's events alike — with the
events' fields as fields, access paths without query values, and X-Request-ID echoed."""
from __future__ import annotations

import base64
import json
import os
import re
import secrets
import socket
import time
from pathlib import Path

import pytest
import requests

from tests.security.attack import WAIT, Probe, open_raw, recv_until, ws_url
from tests.support.live import LiveServerFactory

pytestmark = pytest.mark.live

HEX_ID = re.compile(r"[0-9a-f]{32}")
PROBE_VALUE = "query-value-" + secrets.token_hex(8)  # must appear nowhere in the log


def entries(text: str) -> list[dict]:
    """Every line of a log as a JSON object (fails on the first one that is not)."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            pytest.fail(f"line {number} is not JSON: {line!r}")
        assert isinstance(entry, dict), line
        assert {"time", "level", "logger", "message"} <= set(entry), line
        found.append(entry)
    return found


def wait_for(server, text: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log():
        assert time.monotonic() < deadline, f"{text!r} not logged within {timeout}s:\n{server.log()[-3000:]}"
        time.sleep(0.1)


def upgrade_head(server, request_id: str) -> str:
    """The head of the server's answer to a WebSocket upgrade that carries X-Request-ID (the 101
    goes out before the application runs)."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=WAIT) as raw:
        raw.sendall(("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: nexus\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode() +
                     "\r\nSec-WebSocket-Version: 13\r\nX-Request-ID: " + request_id + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = raw.recv(4096)
            if not chunk:
                break
            head += chunk
    return head.partition(b"\r\n\r\n")[0].decode("latin-1")


@pytest.fixture(scope="module")
def production(tmp_path_factory):
    """A production server (Procfile, gunicorn) taken through a connect, events, refusals, REST
    calls and a bad request, then stopped: what it answered and every line it wrote."""
    factory = LiveServerFactory(tmp_path_factory.mktemp("json-logs"), secret=secrets.token_urlsafe(40))
    try:
        url, seeder = factory.database()
        alice = seeder.user("alice")
        server = factory.start(url, kind="procfile", env={
            "NEXUS_ENV": "production", "LOG_LEVEL": "DEBUG", "NEXUS_SHUTDOWN_GRACE_S": "3",
        })
        token = seeder.token("alice")
        answers = {}
        # REST: a request id given, one made, one replaced; a bad request.
        answers["me"] = requests.get(server.url + "/api/auth/me", timeout=WAIT,
                                     headers={"Authorization": "Bearer " + token, "X-Request-ID": "live-req-1"})
        answers["health"] = requests.get(server.url + f"/health?probe={PROBE_VALUE}&flag", timeout=WAIT)
        answers["bad"] = requests.post(server.url + "/api/auth/login", data="{not json", timeout=WAIT,
                                       headers={"Content-Type": "application/json", "X-Request-ID": "not a token"})
        # Socket.IO over a WebSocket, the token in the query string: a connect, an event acked, an event refused.
        ws = open_raw(server, "&token=" + token)
        ws.send('420["ping"]')
        answers["ping"] = recv_until(ws, lambda packet: packet.startswith("430"))
        ws.send('421["no_such_event",{}]')
        answers["unknown"] = recv_until(ws, lambda packet: packet.startswith("431"))
        ws.close()
        answers["upgrade"] = upgrade_head(server, "ws-req-7")
        # A connection refused (a bad token), a long-polling handshake and a client's mistake (no such session).
        answers["refused"] = Probe().refused_with(server.url, "not-a-token")
        answers["polling"] = requests.get(server.url + "/socket.io/", params={"EIO": "4", "transport": "polling"},
                                          timeout=WAIT)
        answers["unknown_sid"] = requests.get(server.url + "/socket.io/", timeout=WAIT, params={
            "EIO": "4", "transport": "polling", "sid": "AbCdEfGhIjKlMnOpQrSt"})
        wait_for(server, '"event":"disconnected"')
        server.stop()
        yield {"answers": answers, "log": Path(server.log_path).read_text(errors="replace"), "token": token,
               "user": alice, "ws_url": ws_url(server)}
    finally:
        factory.stop_all()


def test_every_line_is_a_json_object(production):
    lines = entries(production["log"])
    loggers = {entry["logger"] for entry in lines}
    assert "gunicorn.error" in loggers, loggers  # gunicorn's own lines (start, worker boot) are JSON too
    assert any("Booting worker" in entry["message"] for entry in lines)
    assert {"nexus.requests", "nexus.realtime"} <= loggers, loggers
    assert "shutdown complete" in production["log"]  # through to the end


def test_lifecycle_lines_carry_their_fields_as_fields(production):
    lines = entries(production["log"])
    by_event = {}
    for entry in lines:
        by_event.setdefault(entry.get("event"), []).append(entry)
    user = str(production["user"]["id"])
    connected = [e for e in by_event["connected"] if e["user"] == user]
    assert connected and connected[0]["ns"] == "/" and connected[0]["message"] == "connected"
    sid = connected[0]["sid"]
    disconnected, = [e for e in by_event["disconnected"] if e["sid"] == sid]
    assert disconnected["user"] == user and disconnected["ns"] == "/" and disconnected["reason"]
    refused, = [e for e in by_event["events_refused"] if e["sid"] == sid]
    assert refused["total"] == 1 and refused["events"] == {"no_such_event": 1} and refused["user"] == user
    assert set(refused["codes"]) and all(isinstance(count, int) for count in refused["codes"].values())
    connection_refused = by_event["connection_refused"][0]
    assert connection_refused["code"] == production["answers"]["refused"]["code"] and connection_refused["ns"] == "/"
    mistake = [e for e in by_event["client_error"] if e["kind"] == "invalid_session"]
    assert mistake and mistake[0]["level"] == "WARNING" and mistake[0]["detail"]


def test_access_lines_have_fields_and_no_query_values(production):
    answers = production["answers"]
    requests_logged = [e for e in entries(production["log"]) if e.get("event") == "http_request"]
    by_id = {e["requestId"]: e for e in requests_logged}

    assert answers["me"].status_code == 200 and answers["me"].headers["X-Request-ID"] == "live-req-1"
    me = by_id["live-req-1"]
    assert (me["method"], me["path"], me["status"], me["client"], me["level"]) == (
        "GET", "/api/auth/me", 200, "127.0.0.1", "INFO")
    assert isinstance(me["durationMs"], (int, float)) and me["durationMs"] >= 0

    made = answers["health"].headers["X-Request-ID"]
    assert HEX_ID.fullmatch(made)
    assert by_id[made]["path"] == "/health?probe&flag" and by_id[made]["status"] == 200

    replaced = answers["bad"].headers["X-Request-ID"]
    assert answers["bad"].status_code == 400 and HEX_ID.fullmatch(replaced)
    assert by_id[replaced]["status"] == 400 and by_id[replaced]["method"] == "POST"

    upgrades = [e for e in requests_logged if e["status"] == 101]
    assert upgrades and upgrades[0]["path"] == "/socket.io/?EIO&transport&token" and upgrades[0]["level"] == "INFO"
    head = answers["upgrade"]
    assert head.startswith("HTTP/1.1 101") and "\r\nX-Request-ID: ws-req-7" in head, head
    assert by_id["ws-req-7"]["status"] == 101  # the 101's id is the access line's
    polls = [e for e in requests_logged if e["path"].startswith("/socket.io/") and e["status"] != 101]
    assert polls and {e["level"] for e in polls} == {"DEBUG"}  # long-polling: debug lines only
    assert answers["polling"].headers["X-Request-ID"] in {e["requestId"] for e in polls}

    log = production["log"]
    assert PROBE_VALUE not in log and production["token"] not in log
    assert "AbCdEfGhIjKlMnOpQrSt" not in log  # an Engine.IO session id is a credential


def test_the_start_banner_of_nexus_serve_is_json_in_production(live_server):
    url, _ = live_server.database()
    server = live_server.start(url, env={"NEXUS_ENV": "production"})
    assert requests.get(server.url + "/health", timeout=WAIT).headers["X-Request-ID"]
    wait_for(server, '"event":"http_request"')
    lines = entries(server.log())
    banner, = [e for e in lines if e.get("event") == "listening"]
    assert banner["url"].endswith(f":{server.port}") and banner["instance"]
    assert banner["message"].startswith("Nexus listening on http://")
