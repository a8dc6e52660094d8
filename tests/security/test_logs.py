"""Log forging: user-controlled text with CR/LF sent through every channel a client has (event names
and payloads, query strings, paths, headers, login bodies, raw frames) must never start a line of its
own in the server log. In JSON mode (production) every line is one JSON object."""
from __future__ import annotations

import json

import pytest
import requests

from tests.security.attack import Control, closes, open_raw, recv_until, serving

pytestmark = pytest.mark.live

FORGED = "2099-01-01 00:00:00,000 CRITICAL nexus.auth: FORGED admin password reset"
CRLF = "\r\n" + FORGED + "\r\n"
MODES = {
    "readable": {"LOG_LEVEL": "DEBUG"},
    "json": {"LOG_LEVEL": "DEBUG", "NEXUS_LOG_JSON": "1"},  # as in production
    "readable-with-protocol-debugging": {"LOG_LEVEL": "DEBUG", "DEBUG": "socketio:*,engineio:*"},
}


@pytest.fixture(scope="module", params=MODES.keys())
def server(request, tmp_path_factory):
    env = {**MODES[request.param], "SOCKETIO_RATE_LIMIT_MAX_REQUESTS": "100000"}
    with serving(tmp_path_factory.mktemp("logs"), env, {"writer": {}, "root": {"role": "admin"}}) as running:
        running.mode = request.param
        forge_everywhere(running)
        yield running


def forge_everywhere(server) -> None:
    """Send the forged line through every channel a client controls."""
    token = server.seeder.token("writer")
    ws = open_raw(server, "&token=" + token)
    # Escaped in JSON (the decoded strings carry CR/LF) ...
    for packet in (
        "420" + json.dumps(["no_such_event" + CRLF, {}]),
        "420" + json.dumps(["join_room", "general" + CRLF]),
        "420" + json.dumps(["send_message", {"roomId": "nowhere", "content": CRLF}]),
        "420" + json.dumps(["user_action", {"action": "x" + CRLF, "data": CRLF}]),
        "420" + json.dumps(["authenticate", CRLF]),
        "420" + json.dumps(["update_status", CRLF]),
    ):
        ws.send(packet)
        assert recv_until(ws, lambda received: received.startswith("430")) is not None
    ws.close()
    # ... and raw, in frames that are not even valid JSON.
    raw = open_raw(server)
    raw.send('42["ping' + CRLF + '"')
    assert closes(raw, 5)
    # HTTP: path, query string, headers, body.
    headers = {"User-Agent": "agent", "X-Forwarded-For": "203.0.113.9", "Authorization": "Bearer x"}
    requests.get(server.url + "/api/nothing%0d%0a" + FORGED.replace(" ", "%20"), headers=headers, timeout=5)
    requests.get(server.url + "/health?q=%0d%0a" + FORGED.replace(" ", "%20"), timeout=5)
    requests.post(server.url + "/api/auth/login", json={"username": CRLF, "password": CRLF}, timeout=5)
    requests.post(server.url + "/api/admin/broadcast", headers={"X-API-Key": "k" * 40},
                  json={"kind": "system", "message": CRLF}, timeout=5)
    requests.get(server.url + "/socket.io/?EIO=4&transport=polling&sid=%0d%0a" + FORGED.replace(" ", "%20"),
                 timeout=5)


def test_user_text_with_cr_lf_never_starts_a_log_line(server, control):
    # The fixture sent the forged line everywhere before the control client connected; send it again.
    forge_everywhere(server)
    control.assert_unharmed()
    forged = [line for line in server.log().splitlines() if line.startswith((FORGED[:23], "FORGED"))]
    assert not forged, f"{len(forged)} forged log line(s) in {server.mode} mode: {forged[0]!r}"


def test_every_log_line_is_one_json_object_in_json_mode(tmp_path_factory):
    env = {**MODES["json"], "SOCKETIO_RATE_LIMIT_MAX_REQUESTS": "100000"}
    with serving(tmp_path_factory.mktemp("jsonlog"), env, {"writer": {}}) as json_server:
        control = Control(json_server)
        try:
            forge_everywhere(json_server)
            control.assert_unharmed()
        finally:
            control.close()
        not_json = []
        for line in json_server.log().splitlines():
            if line.startswith("Nexus listening on "):
                continue  # the start banner on standard output, not a log record
            try:
                entry = json.loads(line)
            except ValueError:
                not_json.append(line)
                continue
            assert {"time", "level", "logger", "message"} <= set(entry), line
        assert not not_json, f"{len(not_json)} log line(s) are not JSON objects: {not_json[:3]!r}"
