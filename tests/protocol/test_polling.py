"""Engine.IO long-polling over a real server: POST and GET semantics, and hostile bodies answered at once.

Raw HTTP only (requests and plain sockets), as the engine.io-protocol test suite speaks it.
"""
from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from tests.protocol.eio import (WAIT, Background, base, get, handshake, open_descriptors, post, raw_request,
                                serving)
from tests.security.attack import rss_bytes

pytestmark = pytest.mark.live

LIMIT = 64 * 1024
# Long heartbeats: no PING comes between the requests of these tests.
ENV = {"SOCKETIO_PING_INTERVAL": "20000", "SOCKETIO_PING_TIMEOUT": "20000", "SOCKETIO_MAX_PAYLOAD": str(LIMIT)}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("polling"), ENV) as running:
        yield running


def _packets(response: requests.Response) -> list[str]:
    assert response.status_code == 200, (response.status_code, response.text)
    return response.text.split("\x1e")


def test_a_post_is_answered_ok_and_its_packets_are_handled(server):
    sid, _ = handshake(server)
    posted = post(server, sid, "40")
    assert (posted.status_code, posted.text) == (200, "ok")
    first = _packets(get(server, sid))[0]
    assert first.startswith('40{"sid":'), first  # the namespace CONNECT answer


def test_a_chunked_post_is_read_whole(server):
    sid, _ = handshake(server)
    posted = post(server, sid, iter([b"4", b"0"]))  # a generator: requests sends it chunked
    assert (posted.status_code, posted.text) == (200, "ok")
    assert _packets(get(server, sid))[0].startswith('40{"sid":')


MALFORMED = {
    "not a packet": b"abc",
    "unknown packet type": b"9",
    "open from a client": b"0",
    "ping from a client": b"2probe",
    "empty body": b"",
    "empty packet between separators": b"40\x1e\x1e40",
    "trailing separator": b"40\x1e",
    "invalid UTF-8": b"4\xff\xfe\xfd",
    "invalid base64": b"b!!!not-base64",
    "too many packets": b"\x1e".join([b"6"] * 1001),
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_payload_gets_400_at_once_and_closes_the_session(server, body):
    sid, _ = handshake(server)
    started = time.monotonic()
    refused = post(server, sid, body, headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == 3
    assert time.monotonic() - started < 2
    assert get(server, sid).status_code == 400
    assert post(server, sid, "40").status_code == 400
    assert "Traceback" not in server.log()


def test_a_waiting_get_ends_with_a_close_packet_when_a_post_is_malformed(server):
    sid, _ = handshake(server)
    waiting = Background(get, server, sid)
    time.sleep(0.3)
    assert post(server, sid, "9").status_code == 400
    assert waiting.result().text == "1"


def test_a_body_over_the_limit_gets_413_before_it_is_read_and_ends_the_session(server):
    sid, _ = handshake(server)
    refused = post(server, sid, "4" + "x" * (2 * LIMIT))
    assert refused.status_code == 413
    assert get(server, sid).status_code == 400


def test_a_chunked_body_over_the_limit_gets_413_and_ends_the_session(server):
    sid, _ = handshake(server)
    chunk = b"x" * 16384
    refused = post(server, sid, iter([b"4"] + [chunk] * (2 * LIMIT // len(chunk) + 1)))
    assert refused.status_code == 413
    assert get(server, sid).status_code == 400
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("waiting", [2, 3])
def test_gets_waiting_on_one_session_at_once_close_it(server, waiting):
    sid, _ = handshake(server)
    first = Background(get, server, sid)
    time.sleep(0.3)
    assert not first.done(), "a GET on a session with nothing to send should wait"
    others = []
    for _ in range(waiting - 1):
        others.append(Background(get, server, sid))
        time.sleep(0.1)
    started = time.monotonic()
    assert first.result(timeout=2).text == "1"  # the CLOSE packet
    for other in others:
        assert other.result(timeout=2).status_code == 400
    assert time.monotonic() - started < 2  # long before any ping interval
    assert get(server, sid).status_code == 400
    assert post(server, sid, "3").status_code == 400


def test_unknown_packet_types_keep_no_connection_open(server, control):
    pid = server.process.pid
    before = open_descriptors(pid)
    http = requests.Session()
    answers = []
    for _ in range(200):
        sid, _ = handshake(server, http)
        body = b"9"
        request = (f"POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\n"
                   f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        answers.append(raw_request(server, request, timeout=5).split(b"\r\n", 1)[0])
    http.close()
    assert set(answers) == {b"HTTP/1.1 400 Bad Request"}, set(answers)
    deadline = time.monotonic() + 5
    while open_descriptors(pid) > before + 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open_descriptors(pid) <= before + 10, (before, open_descriptors(pid))
    control.assert_unharmed()


def test_a_body_that_never_arrives_whole_gets_400(server):
    sid, _ = handshake(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as sock:
        sock.sendall((f"POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\n"
                      "Content-Length: 100\r\n\r\n40").encode())
        sock.shutdown(socket.SHUT_WR)  # 98 bytes short
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert get(server, sid).status_code == 400
    assert "Traceback" not in server.log()


def test_sessions_closed_for_a_malformed_packet_are_released(server):
    http = requests.Session()

    def churn(count: int) -> None:
        for _ in range(count):
            opened = http.get(base(server), timeout=WAIT)
            sid = json.loads(opened.text[1:])["sid"]
            assert http.post(base(server, f"&sid={sid}"), data="9", timeout=WAIT).status_code == 400

    churn(500)  # warm up: allocator pools, caches, the log's buffers
    time.sleep(0.5)
    before = rss_bytes(server.process.pid)
    churn(2000)
    time.sleep(1)
    grown = rss_bytes(server.process.pid) - before
    http.close()
    assert grown < 3 * 1024 * 1024, f"RSS grew by {grown / 1024:.0f} KiB over 2,000 closed sessions"
