"""The EVENT hot path of the packet layer, over raw WebSocket frames against a real server: a text
EVENT goes from the frame to the namespace's handler and its result to the ACK without
python-socketio's packet objects, and must still answer exactly as Socket.IO v5 says (ack ids,
namespaces, acks holding bytes, malformed heads), and a reply to one socket (the `pong`) goes
straight to its connection."""
from __future__ import annotations

import json
from typing import Any

import pytest

from nexus.models import iso_from_epoch_ms, isoformat
from nexus.protocol.packets import _EVENT_HEAD
from tests.security.attack import closes, open_raw, recv_until, serving


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("event-path"), users={"eve": {}}) as running:
        yield running


def connected(server, namespace: str = "") -> Any:
    token = server.seeder.token("eve")
    prefix = f"40{namespace}," if namespace else "40"
    return open_raw(server, connect=prefix + json.dumps({"token": token}))


def ack_of(packet: str, prefix: str) -> Any:
    assert packet.startswith(prefix), packet
    return json.loads(packet[len(prefix):])


def test_an_event_with_an_ack_id_is_answered_under_that_id(server):
    ws = connected(server)
    try:
        ws.send('4212345["ping"]')
        answer = recv_until(ws, lambda packet: packet.startswith("43"))
        (payload,) = ack_of(answer, "4312345")
        assert payload["success"] is True and isinstance(payload["timestamp"], int)
        assert payload["serverTime"].endswith("Z")
    finally:
        ws.close()


def test_the_longest_ack_id_socketio_reads_is_kept_whole(server):
    ws = connected(server)
    try:
        ack_id = "9" * 100
        ws.send(f'42{ack_id}["ping"]')
        answer = recv_until(ws, lambda packet: packet.startswith("43"))
        assert answer.startswith("43" + ack_id + "[")
    finally:
        ws.close()


def test_an_ack_id_longer_than_socketio_reads_closes_the_connection(server):
    ws = connected(server)
    try:
        ws.send(f'42{"1" * 101}["ping"]')
        assert closes(ws)
    finally:
        ws.close()


def test_an_event_on_another_namespace_is_acked_on_that_namespace(server):
    ws = connected(server, "/chat")
    try:
        ws.send('42/chat,7["join_room",{"roomId":"general"}]')
        answer = recv_until(ws, lambda packet: packet.startswith("43/chat,"))
        (payload,) = ack_of(answer, "43/chat,7")
        assert payload["success"] is True, payload
    finally:
        ws.close()


def test_an_event_without_an_ack_id_gets_its_error_as_an_error_event(server):
    ws = connected(server)
    try:
        ws.send('42["no_such_event"]')
        answer = recv_until(ws, lambda packet: packet.startswith('42["error"'))
        error = json.loads(answer[2:])[1]
        assert error["code"] == "UNKNOWN_EVENT" and error["event"] == "no_such_event"
    finally:
        ws.close()


@pytest.mark.parametrize("packet", ['42', '42/', '42[]', '42{"a":1}', '42["ping"', '42/nowhere,["ping"]'])
def test_a_malformed_event_closes_only_that_connection(server, packet):
    bystander = connected(server)
    ws = connected(server)
    try:
        ws.send(packet)
        assert closes(ws), packet
        bystander.send('421["ping"]')
        assert recv_until(bystander, lambda answer: answer.startswith("431["))
    finally:
        ws.close()
        bystander.close()


def test_ping_is_answered_by_pong_and_by_ack(server):
    ws = connected(server)
    try:
        ws.send('423["ping",{"timestamp":42}]')
        pong = recv_until(ws, lambda packet: packet.startswith('42["pong"'))
        answer = recv_until(ws, lambda packet: packet.startswith("43"))
        assert json.loads(pong[2:])[1]["clientTimestamp"] == 42
        assert ack_of(answer, "433")[0]["clientTimestamp"] == 42
    finally:
        ws.close()


def test_the_event_head_reads_what_python_socketio_reads():
    cases = {
        '2["e"]': (None, ""),
        '212["e"]': (None, "12"),
        '2/chat,["e"]': ("/chat", ""),
        '2/chat,9["e"]': ("/chat", "9"),
        '2/chat?x=1,9["e"]': ("/chat?x=1", "9"),
    }
    for packet, expected in cases.items():
        head = _EVENT_HEAD.match(packet)
        assert head is not None and head.group(1, 2) == expected, packet


def test_the_ping_clock_is_formatted_as_isoformat_does():
    from datetime import datetime, timezone

    for epoch_ms in (0, 999, 1_000, 1_700_000_000_123, 4_102_444_799_999):
        expected = isoformat(datetime.fromtimestamp(epoch_ms / 1000, timezone.utc))
        assert iso_from_epoch_ms(epoch_ms) == expected
