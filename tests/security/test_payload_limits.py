"""Size attacks: huge WebSocket frames, compression bombs, split messages, big HTTP and long-polling
bodies, over-long messages, and batch sizes of history and search.

The WebSocket limit is checked on each frame header, before its payload is read: a huge frame is
refused without being buffered (RSS read from /proc), and the control client never notices.
"""
from __future__ import annotations

import json
import zlib

import pytest
import requests
import socketio

from tests.security.attack import (
    MIB,
    WAIT,
    close_code,
    frame,
    frame_header,
    health,
    open_raw,
    rss_bytes,
    send_quietly,
    serving,
    unique_name,
)

pytestmark = pytest.mark.live

LIMIT = 100_000
MAX_MESSAGE_LENGTH = 500
HISTORY_MAX_LIMIT = 5
MAX_SOCKETS = 3
MAX_ROOMS = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {
        "SOCKETIO_MAX_PAYLOAD": str(LIMIT),
        "NEXUS_MAX_MESSAGE_LENGTH": str(MAX_MESSAGE_LENGTH),
        "NEXUS_HISTORY_MAX_LIMIT": str(HISTORY_MAX_LIMIT),
        "NEXUS_MAX_SOCKETS_PER_USER": str(MAX_SOCKETS),
        "NEXUS_MAX_ROOMS_PER_SOCKET": str(MAX_ROOMS),
        # Size is what is attacked here, not the rate: a generous event allowance.
        "SOCKETIO_RATE_LIMIT_MAX_REQUESTS": "100000",
    }
    with serving(tmp_path_factory.mktemp("payload"), env) as running:
        yield running


def auth(token: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + token}


# -- WebSocket frames -----------------------------------------------------------------------


def test_a_50_mb_frame_is_closed_with_1009_without_the_server_buffering_it(server, control):
    before = rss_bytes(server.process.pid)
    ws = open_raw(server)
    size = 50 * MIB
    assert send_quietly(ws.sock, frame_header(0x1, size))
    chunk, sent = b"4" * 65536, 0
    while sent < size and send_quietly(ws.sock, chunk):
        sent += len(chunk)
    assert close_code(ws.sock) == 1009
    growth = rss_bytes(server.process.pid) - before
    assert growth < 8 * MIB, f"the server's memory grew by {growth / MIB:.1f} MiB"
    assert f"message of more than {LIMIT} bytes" in server.log()
    control.assert_unharmed()


def test_the_header_alone_of_an_oversized_frame_is_refused(server, control):
    # Nothing of the payload is sent: the refusal can only come from the frame header.
    ws = open_raw(server)
    assert send_quietly(ws.sock, frame_header(0x2, 50 * MIB))
    assert close_code(ws.sock) == 1009
    # A small first fragment, then a continuation header that takes the message over the limit.
    ws = open_raw(server)
    assert send_quietly(ws.sock, frame(0x1, b"4" + b"x" * 999, fin=False))
    assert send_quietly(ws.sock, frame_header(0x0, LIMIT, fin=True))
    assert close_code(ws.sock) == 1009
    control.assert_unharmed()


def test_a_message_split_into_continuation_frames_counts_as_a_whole(server, control):
    ws = open_raw(server)
    part = b"x" * 40_000
    assert send_quietly(ws.sock, frame(0x1, b"4" + part, fin=False))
    assert send_quietly(ws.sock, frame(0x0, part, fin=False))
    send_quietly(ws.sock, frame(0x0, part, fin=True))  # 120 kB in all
    assert close_code(ws.sock) == 1009
    control.assert_unharmed()


def test_compression_is_never_negotiated_and_a_compressed_bomb_is_never_inflated(server, control):
    # The client offers permessage-deflate; the server does not take it.
    offered = open_raw(server, header=["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"])
    assert "sec-websocket-extensions" not in {name.lower() for name in offered.getheaders()}
    before = rss_bytes(server.process.pid)
    # ~200 kB of raw deflate that would inflate to 200 MiB, sent as a compressed (RSV1) frame anyway.
    bomb = zlib.compress(b"\0" * (200 * MIB), 9)[2:-4]
    send_quietly(offered.sock, frame(0x1, bomb, rsv1=True))
    assert close_code(offered.sock) in (1002, 1009)
    # A small compressed frame too (under the size limit): a protocol error, never inflated.
    small = open_raw(server)
    small_bomb = zlib.compress(b"4" * (20 * MIB), 9)[2:-4]
    assert len(small_bomb) < LIMIT
    send_quietly(small.sock, frame(0x1, small_bomb, rsv1=True))
    assert close_code(small.sock) == 1002
    growth = rss_bytes(server.process.pid) - before
    assert growth < 8 * MIB, f"the server's memory grew by {growth / MIB:.1f} MiB"
    control.assert_unharmed()


def test_many_messages_just_under_the_limit_are_all_served(server, control, connect_user):
    sender = connect_user("bulk")
    pad = "y" * (LIMIT - 200)
    for number in range(25):
        ack = sender.sio.call("ping", {"timestamp": number, "pad": pad}, timeout=WAIT)
        assert ack["success"] is True and ack["clientTimestamp"] == number
    assert sender.sio.connected and sender.sio.transport() == "websocket"
    control.assert_unharmed()


# -- HTTP bodies ----------------------------------------------------------------------------


def test_a_long_polling_body_over_the_limit_gets_413_and_ends_that_session(server, control):
    base = server.url + "/socket.io/?EIO=4&transport=polling"
    opened = requests.get(base, timeout=5)
    assert opened.status_code == 200
    sid = json.loads(opened.text[opened.text.index("{"):])["sid"]
    big = requests.post(f"{base}&sid={sid}", data="4" + "x" * (2 * LIMIT), timeout=WAIT)
    assert big.status_code == 413
    # The session is over at once (aborted, not left waiting for a poll).
    assert requests.get(f"{base}&sid={sid}", timeout=5).status_code == 400
    assert f"refused a long-polling body of {2 * LIMIT + 1} bytes" in server.log()
    assert requests.get(base, timeout=5).status_code == 200  # new sessions are fine
    control.assert_unharmed()


def test_an_http_json_body_over_the_limit_gets_413_with_the_error_contract(server, control):
    body = json.dumps({"username": "someone", "password": "p" * (2 * LIMIT)})
    refused = requests.post(
        server.url + "/api/auth/login", data=body, headers={"Content-Type": "application/json"}, timeout=WAIT
    )
    assert refused.status_code == 413
    assert refused.headers["Content-Type"].startswith("application/json")
    error = refused.json()
    assert error["success"] is False and error["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert isinstance(error["error"]["message"], str) and error["error"]["message"]
    control.assert_unharmed()


# -- sizes the application checks -------------------------------------------------------------


def test_message_content_over_the_maximum_length_is_refused_and_not_stored(server, control, connect_user):
    sender, watcher = connect_user("long"), connect_user("watch")
    room = unique_name("room")
    assert sender.sio.call("join_room", room, timeout=WAIT)["success"]
    assert watcher.sio.call("join_room", room, timeout=WAIT)["success"]

    too_long = sender.sio.call("send_message", {"roomId": room, "content": "z" * (MAX_MESSAGE_LENGTH + 1)},
                               timeout=WAIT)
    assert too_long["success"] is False and too_long["error"]["code"] == "VALIDATION_ERROR"
    fits = sender.sio.call("send_message", {"roomId": room, "content": "z" * MAX_MESSAGE_LENGTH}, timeout=WAIT)
    assert fits["success"] is True

    # The accepted message arrives; the refused one was never broadcast nor stored.
    watcher.wait_for("room_message", lambda message: message["id"] == fits["messageId"])
    watcher.assert_count_stays("room_message", 1)
    history = watcher.sio.call("get_history", {"roomId": room}, timeout=WAIT)
    assert [message["id"] for message in history["messages"]] == [fits["messageId"]]
    control.assert_unharmed()


def test_history_and_search_page_sizes_are_capped(server, control, connect_user):
    writer = connect_user("hist")
    room = unique_name("room")
    assert writer.sio.call("join_room", room, timeout=WAIT)["success"]
    for number in range(HISTORY_MAX_LIMIT + 3):
        assert writer.sio.call("send_message", {"roomId": room, "content": f"m{number}"}, timeout=WAIT)["success"]

    page = writer.sio.call("get_history", {"roomId": room, "limit": 100_000}, timeout=WAIT)
    assert page["success"] is True
    assert len(page["messages"]) == HISTORY_MAX_LIMIT and page["hasMore"] is True

    rest = requests.get(f"{server.url}/api/rooms/{room}/messages?limit=100000", headers=auth(writer.token),
                        timeout=5)
    assert rest.status_code == 200 and len(rest.json()["messages"]) == HISTORY_MAX_LIMIT

    too_many = requests.get(server.url + "/api/users?limit=51", headers=auth(writer.token), timeout=5)
    assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "VALIDATION_ERROR"
    huge = requests.get(server.url + "/api/users?limit=100000", headers=auth(writer.token), timeout=5)
    assert huge.status_code == 400 and huge.json()["error"]["code"] == "VALIDATION_ERROR"
    assert requests.get(server.url + "/api/users?limit=50", headers=auth(writer.token), timeout=5).status_code == 200
    control.assert_unharmed()


def test_caps_on_sockets_per_user_rooms_per_socket_and_room_names(server, control, connect_user, probes):
    first = connect_user("caps")
    others = [probes().connect(server.url, first.token) for _ in range(MAX_SOCKETS - 1)]
    assert all(other.sio.connected for other in others)
    refused = probes().refused_with(server.url, first.token)
    assert refused["code"] == "LIMIT_REACHED"

    for number in range(MAX_ROOMS):
        assert first.sio.call("join_room", f"{first.name}-r{number}", timeout=WAIT)["success"]
    over = first.sio.call("join_room", f"{first.name}-r{MAX_ROOMS}", timeout=WAIT)
    assert over["success"] is False and over["error"]["code"] == "LIMIT_REACHED"
    assert first.sio.call("leave_room", f"{first.name}-r0", timeout=WAIT)["success"]

    long_name = first.sio.call("join_room", "r" * 65, timeout=WAIT)
    assert long_name["success"] is False and long_name["error"]["code"] == "VALIDATION_ERROR"
    assert first.sio.call("join_room", "r" * 64, timeout=WAIT)["success"]
    control.assert_unharmed()


def test_the_server_stays_healthy_after_the_size_attacks(server):
    assert server.process.poll() is None and health(server) == 200
    assert "Traceback" not in server.log()
    # A python-socketio client can still connect and be served.
    client = socketio.Client(reconnection=False)
    client.connect(server.url, transports=["websocket"], wait_timeout=WAIT)
    try:
        assert client.call("ping", timeout=WAIT)["success"] is True
    finally:
        client.disconnect()
