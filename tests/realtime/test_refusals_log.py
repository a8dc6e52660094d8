"""Refused events are counted in the metrics and summarised in the log: at most one line per
connection per interval, never one line each (unit, Flask-SocketIO test client, and a real server
taking a burst of 10,000 events)."""
from __future__ import annotations

import logging
import re
import secrets
import socket
import time

import pytest
import requests
import websocket

from nexus.realtime.refusals import RefusalLog
from tests.security.attack import open_raw, recv_until, serving

SUMMARY = re.compile(r"refused (\d+) events? in the last [\d.]+ s ns=(\S+) sid=(\S+) user=(\S+): (.*) \(events: (.*)\)")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def summaries(records) -> list[re.Match]:
    return [m for m in (SUMMARY.fullmatch(r.getMessage()) for r in records if r.name == "nexus.realtime") if m]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def refusals(clock) -> RefusalLog:
    return RefusalLog("/chat", interval_s=10, clock=clock)


def test_the_first_refusal_is_told_then_one_line_per_interval(refusals, clock, caplog):
    caplog.set_level(logging.INFO, logger="nexus.realtime")
    refusals.refused("s1", "7", "VALIDATION_ERROR", "send_message")
    for _ in range(500):
        refusals.refused("s1", "7", "RATE_LIMITED", "typing_start")
    refusals.refused("s1", "7", "FORBIDDEN", "typing_start")
    lines = summaries(caplog.records)
    assert [m.group(1, 2, 3, 4, 5, 6) for m in lines] == [
        ("1", "/chat", "s1", "7", "VALIDATION_ERROR=1", "send_message=1"),
    ]
    clock.now += 10
    refusals.refused("s1", "7", "RATE_LIMITED", "typing_start")
    lines = summaries(caplog.records)
    assert len(lines) == 2
    assert lines[1].group(1, 5, 6) == ("502", "FORBIDDEN=1, RATE_LIMITED=501", "typing_start=502")


def test_closing_reports_what_was_not_told_and_forgets(refusals, clock, caplog):
    caplog.set_level(logging.INFO, logger="nexus.realtime")
    refusals.refused("s1", "guest", "UNKNOWN_EVENT", "nope")
    refusals.refused("s1", "guest", "UNKNOWN_EVENT", "nope")
    refusals.refused("s1", "guest", "UNKNOWN_EVENT", "nope")
    refusals.closed("s1")
    refusals.closed("s1")  # twice: nothing more to say
    lines = summaries(caplog.records)
    assert [m.group(1, 4, 5) for m in lines] == [("1", "guest", "UNKNOWN_EVENT=1"), ("2", "guest", "UNKNOWN_EVENT=2")]
    assert not refusals._tallies


def test_connections_are_summarised_apart_and_a_sweep_reports_the_quiet_ones(refusals, clock, caplog):
    caplog.set_level(logging.INFO, logger="nexus.realtime")
    for sid in ("a", "b"):
        refusals.refused(sid, "1", "RATE_LIMITED", "ping")
        refusals.refused(sid, "1", "RATE_LIMITED", "ping")
    assert [m.group(3) for m in summaries(caplog.records)] == ["a", "b"]
    clock.now += 11
    refusals.sweep()
    assert sorted(m.group(3, 1) for m in summaries(caplog.records)[2:]) == [("a", "1"), ("b", "1")]
    # Quiet for a whole interval more: forgotten, the next refusal is told at once again.
    clock.now += 21
    refusals.sweep()
    assert not refusals._tallies
    refusals.refused("a", "1", "RATE_LIMITED", "ping")
    assert len(summaries(caplog.records)) == 5


def test_server_faults_are_logged_where_they_happen_not_here(refusals, caplog):
    caplog.set_level(logging.INFO, logger="nexus.realtime")
    refusals.refused("s1", "1", "INTERNAL_ERROR", "ping")
    refusals.refused("s1", "1", "UNAVAILABLE", "ping")
    assert not summaries(caplog.records) and not refusals._tallies


def test_event_names_are_bounded(refusals, clock, caplog):
    caplog.set_level(logging.INFO, logger="nexus.realtime")
    refusals.refused("s1", "1", "UNKNOWN_EVENT", "first")
    for index in range(100):
        refusals.refused("s1", "1", "UNKNOWN_EVENT", f"made-up-{index}")
    refusals.closed("s1")
    events = summaries(caplog.records)[-1].group(6).split(", ")
    assert len(events) == 9 and events[-1] == "other=92"


def test_a_cut_off_is_decided_once_per_connection(refusals):
    assert refusals.first_cut_off("s1") is True
    assert refusals.first_cut_off("s1") is False
    assert refusals.first_cut_off("s2") is True
    refusals.closed("s1")
    refusals.closed("s2")
    assert not refusals._tallies


# -- through the namespaces ------------------------------------------------------------------


def token(app, username: str) -> str:
    from nexus.services.tokens import issue_access_token
    from nexus.services.users import create_user, find_by_username

    with app.app_context():
        user = find_by_username(username) or create_user(username, "correct-horse-1")
        return issue_access_token(user)


def sample(app, name: str, labels: dict[str, str]) -> float:
    registry = app.extensions["nexus.metrics"].registry
    return registry.get_sample_value(name, labels) or 0.0


def test_a_burst_of_refused_events_is_counted_and_summarised(app_factory, caplog):
    from nexus.extensions import socketio

    app = app_factory(rate_limit_max_requests=5, rate_limit_window_ms=60_000)
    caplog.set_level(logging.INFO)
    client = socketio.test_client(app, auth={"token": token(app, "alice")})
    codes = []
    for _ in range(40):
        if not client.is_connected():
            break  # cut off (the disconnect runs as a background task, at its own pace)
        codes.append(client.emit("typing_start", {"roomId": "general"}, callback=True)["error"]["code"])
    socketio.sleep(0.2)
    assert not client.is_connected()
    # Five allowed by the limit (and refused: alice is not in the room), then ten or more over it.
    assert codes[:5] == ["NOT_IN_ROOM"] * 5 and set(codes[5:]) == {"RATE_LIMITED"} and len(codes) >= 16

    limited = len(codes) - 5
    assert sample(app, "nexus_errors_total", {"code": "NOT_IN_ROOM"}) == 5
    assert sample(app, "nexus_errors_total", {"code": "RATE_LIMITED"}) == limited
    assert sample(app, "nexus_rate_limit_rejections_total", {"event": "typing_start"}) == limited
    realtime = [r for r in caplog.records if r.name == "nexus.realtime"]
    every = summaries(realtime)
    # One line at the first refusal, one when the connection closed: every refusal in one of them.
    # The test client may still deliver an event the loop sent while the server was closing the
    # connection (the cut-off runs in the background): refused too, in a line of its own, as a
    # guest's, since the session had ended by then.
    lines = [m for m in every if m.group(4) != "guest"]
    after_close = [m for m in every if m.group(4) == "guest"]
    assert len(lines) == 2 and sum(int(m.group(1)) for m in every) == len(codes)
    assert all(m.group(5).startswith("RATE_LIMITED=") for m in after_close)
    late = sum(int(m.group(1)) for m in after_close)
    assert lines[1].group(5) == f"NOT_IN_ROOM=4, RATE_LIMITED={limited - late}"
    assert len([r for r in realtime if "kept sending while rate limited" in r.getMessage()]) == 1
    assert not [r for r in realtime if r.getMessage().startswith("rate limited")]
    assert len(realtime) <= 5 + len(after_close), [r.getMessage() for r in realtime]


# -- a real server --------------------------------------------------------------------------


BURST = 10_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"SOCKETIO_RATE_LIMIT_MAX_REQUESTS": "100", "LOG_LEVEL": "INFO",
           "NEXUS_METRICS_TOKEN": secrets.token_urlsafe(40)}
    with serving(tmp_path_factory.mktemp("refusals"), env, users={"flooder": {}}) as running:
        running.metrics_token = env["NEXUS_METRICS_TOKEN"]
        yield running


def metric(server, name: str, labels: str) -> float:
    text = requests.get(server.url + "/metrics", headers={"Authorization": f"Bearer {server.metrics_token}"},
                        timeout=10).text
    found = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_ten_thousand_typing_events_in_one_burst_write_a_handful_of_lines(server):
    # A small receive window: what the server answers waits on its side while the burst goes on,
    # and must still arrive (the DISCONNECT last) when the server ends the connection.
    ws = open_raw(server, connect='40{"token":"%s"}' % server.seeder.token("flooder"),
                  sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    before = server.log().count("\n")
    frame = '42["typing_start",{"roomId":"general"}]'
    sent = 0
    try:
        for _ in range(BURST):
            ws.send(frame)
            sent += 1
    except (websocket.WebSocketException, OSError):
        pass  # cut off mid-burst, as it should be
    ws.seen = None  # thousands of error events: not kept
    # Cut off: the server ends the namespace connection (Socket.IO DISCONNECT).
    assert recv_until(ws, lambda packet: packet == "41", timeout=60) == "41"
    ws.close()
    deadline = time.monotonic() + 10
    while "disconnected ns=/ " not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    written = server.log().splitlines()[before:]
    lines = [m for m in (SUMMARY.search(line) for line in written) if m]
    refused = sum(int(m.group(1)) for m in lines)
    assert sent > 200 and refused >= 200
    assert 1 <= len(lines) <= 2, written
    assert sum("kept sending while rate limited" in line for line in written) == 1
    assert len(written) <= 10, written
    assert metric(server, "nexus_errors_total", 'code="NOT_IN_ROOM"') + metric(
        server, "nexus_errors_total", 'code="RATE_LIMITED"') == refused
    assert metric(server, "nexus_rate_limit_rejections_total", 'event="typing_start"') == refused - 100
