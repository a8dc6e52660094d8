"""Engine.IO heartbeats over a real server (pingInterval 300 ms, pingTimeout 200 ms, as the protocol suite
configures them): PINGs on time for every session, and sessions closed when their PONG does not come."""
from __future__ import annotations

import threading
import time

import pytest

from tests.protocol.eio import Background, get, handshake, post, serving, ws_closed, ws_open

pytestmark = pytest.mark.live

INTERVAL, TIMEOUT = 0.300, 0.200
TOLERANCE = 0.050
ENV = {"SOCKETIO_PING_INTERVAL": "300", "SOCKETIO_PING_TIMEOUT": "200"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("heartbeat"), ENV) as running:
        yield running


def test_polling_pings_come_at_the_interval_and_pongs_keep_the_session(server):
    sid, _ = handshake(server)
    since = time.monotonic()
    for _ in range(3):
        polled = get(server, sid)
        waited = time.monotonic() - since
        assert (polled.status_code, polled.text) == (200, "2")
        assert abs(waited - INTERVAL) <= TOLERANCE, f"PING after {waited * 1000:.0f} ms"
        since = time.monotonic()
        assert post(server, sid, "3").text == "ok"


def test_websocket_pings_are_on_time_for_sessions_opened_at_any_moment(server):
    # Sessions opened 37 ms apart: a shared timer that ticks would ping some of them late.
    delays: list[float] = []
    lock = threading.Lock()

    def session() -> None:
        ws = ws_open(server)
        try:
            assert ws.recv().startswith("0{")
            opened = time.monotonic()
            for _ in range(2):
                assert ws.recv() == "2"
                with lock:
                    delays.append(time.monotonic() - opened)
                ws.send("3")
                opened = time.monotonic()
        finally:
            ws.close()

    threads = []
    for _ in range(8):
        thread = threading.Thread(target=session)
        thread.start()
        threads.append(thread)
        time.sleep(0.037)
    for thread in threads:
        thread.join(10)
    assert len(delays) == 16, delays
    late = [round(d * 1000) for d in delays if abs(d - INTERVAL) > TOLERANCE]
    assert not late, f"PINGs off the {INTERVAL * 1000:.0f} ms interval: {late} ms"


def test_a_polling_session_without_a_pong_is_closed_and_its_next_get_gets_400(server):
    sid, _ = handshake(server)
    time.sleep(INTERVAL + TIMEOUT + 0.1)  # the PING waits in the session, unanswered
    assert get(server, sid).status_code == 400
    assert post(server, sid, "3").status_code == 400


def test_a_get_waiting_when_the_pong_is_overdue_ends_with_a_close_packet(server):
    sid, _ = handshake(server)
    assert get(server, sid).text == "2"
    pinged = time.monotonic()
    waiting = Background(get, server, sid)  # never answers the PING
    closed = waiting.result(timeout=3)
    assert closed.text == "1"
    assert abs(waiting.finished_at - pinged - TIMEOUT) <= TOLERANCE + 0.05
    assert get(server, sid).status_code == 400


def test_a_websocket_that_never_answers_is_closed_after_interval_and_timeout(server):
    ws = ws_open(server)
    try:
        assert ws.recv().startswith("0{")
        opened = time.monotonic()
        assert ws_closed(ws, timeout=3), "the server kept a client that never answered a PING"
        assert time.monotonic() - opened <= INTERVAL + TIMEOUT + 0.25
    finally:
        ws.close()


def test_a_websocket_that_answers_stays_open(server):
    ws = ws_open(server)
    try:
        assert ws.recv().startswith("0{")
        ended = time.monotonic() + 1.5
        pings = 0
        while time.monotonic() < ended:
            ws.settimeout(1.0)
            assert ws.recv() == "2"
            ws.send("3")
            pings += 1
        assert pings >= 4
    finally:
        ws.close()
    assert "Traceback" not in server.log()
