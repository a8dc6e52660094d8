"""Engine.IO CLOSE and the upgrade from long-polling to WebSocket, over a real server with raw HTTP and
raw WebSocket frames."""
from __future__ import annotations

import time

import pytest

from tests.protocol.eio import Background, get, handshake, post, serving, ws_closed, ws_open

pytestmark = pytest.mark.live

ENV = {"SOCKETIO_PING_INTERVAL": "20000", "SOCKETIO_PING_TIMEOUT": "20000"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("close-upgrade"), ENV) as running:
        yield running


# -- CLOSE ------------------------------------------------------------------------------------


def test_a_close_packet_ends_the_waiting_get_with_a_noop_and_the_session(server):
    sid, _ = handshake(server)
    waiting = Background(get, server, sid)
    time.sleep(0.3)
    assert post(server, sid, "1").text == "ok"
    assert waiting.result(timeout=2).text == "6"
    assert get(server, sid).status_code == 400
    assert post(server, sid, "40").status_code == 400


def test_a_close_packet_after_others_in_one_payload_ends_the_session(server):
    sid, _ = handshake(server)
    assert post(server, sid, "40\x1e1").text == "ok"
    assert get(server, sid).status_code == 400


def test_a_close_packet_on_websocket_makes_the_server_close_the_socket(server):
    ws = ws_open(server)
    try:
        assert ws.recv().startswith("0{")
        ws.send("1")
        assert ws_closed(ws, timeout=2)
    finally:
        ws.close()


def test_a_session_the_server_closes_tells_a_polling_client_on_its_next_get(server):
    sid, _ = handshake(server)
    assert post(server, sid, "40").text == "ok"
    assert get(server, sid).text.startswith('40{"sid":')
    assert post(server, sid, "42{nope}").text == "ok"  # valid Engine.IO, not Socket.IO: the server closes
    time.sleep(0.5)
    last = get(server, sid)
    assert last.status_code == 200 and last.text.split("\x1e")[-1] == "1", last.text  # the CLOSE packet
    assert get(server, sid).status_code == 400


# -- the upgrade ---------------------------------------------------------------------------------


def _probe(server, sid):
    ws = ws_open(server, sid)
    ws.send("2probe")
    assert ws.recv() == "3probe"
    return ws


def test_the_waiting_get_ends_with_a_noop_and_the_next_frame_is_the_applications(server):
    sid, _ = handshake(server)
    waiting = Background(get, server, sid)
    time.sleep(0.3)
    ws = _probe(server, sid)
    try:
        assert waiting.result(timeout=2).text == "6"
        ws.send("5")
        ws.send("40")
        ws.settimeout(5)
        first = ws.recv()
        assert first.startswith('40{"sid":'), first  # no NOOP (or anything else) replayed before it
    finally:
        ws.close()


def test_without_a_waiting_get_no_stray_noop_is_replayed_onto_the_websocket(server):
    sid, _ = handshake(server)
    ws = _probe(server, sid)
    try:
        ws.send("5")
        ws.send("40")
        ws.settimeout(5)
        first = ws.recv()
        assert first.startswith('40{"sid":'), first
    finally:
        ws.close()


def test_a_get_during_the_upgrade_is_answered_with_a_noop_at_once(server):
    sid, _ = handshake(server)
    ws = _probe(server, sid)
    try:
        started = time.monotonic()
        assert get(server, sid).text == "6"
        assert time.monotonic() - started < 1
        ws.send("5")
    finally:
        ws.close()


def test_packets_sent_during_the_upgrade_arrive_on_the_websocket_in_order(server):
    sid, _ = handshake(server)
    ws = _probe(server, sid)
    try:
        assert post(server, sid, "40").text == "ok"  # answered while the upgrade is under way
        ws.send("5")
        ws.settimeout(5)
        assert ws.recv().startswith('40{"sid":')
    finally:
        ws.close()


def test_after_the_upgrade_http_requests_and_a_second_websocket_are_refused(server):
    sid, _ = handshake(server)
    ws = _probe(server, sid)
    try:
        ws.send("5")
        ws.send("40")
        ws.settimeout(5)
        assert ws.recv().startswith('40{"sid":')
        assert get(server, sid).status_code == 400
        assert post(server, sid, "40").status_code == 400
        second = ws_open(server, sid)
        try:
            assert ws_closed(second, timeout=2)
        finally:
            second.close()
        ws.send('421["ping"]')  # the upgraded session goes on
        answer = ws.recv()
        while answer.startswith("42"):  # events the welcome sent meanwhile
            answer = ws.recv()
        assert answer.startswith("431["), answer
    finally:
        ws.close()


def test_a_failed_probe_leaves_the_session_on_long_polling(server):
    sid, _ = handshake(server)
    ws = ws_open(server, sid)
    ws.send("2nonsense")
    assert ws_closed(ws, timeout=2)
    ws.close()
    assert post(server, sid, "40").text == "ok"
    assert get(server, sid).text.startswith('40{"sid":')
    assert "Traceback" not in server.log()
