"""Bad input over raw WebSocket frames (websocket-client): malformed Socket.IO packets, binary junk,
huge ack ids, deeply nested JSON, invalid UTF-8, events before connect, wrong argument types, huge
numbers, binary attachments that never arrive. Each gets a clear error ack or closes that one
connection; never an internal error or a traceback in the log, and the control client notices
nothing."""
from __future__ import annotations

import json

import pytest

from tests.security.attack import (
    MIB,
    close_code,
    closes,
    frame,
    health,
    open_raw,
    recv_until,
    rss_bytes,
    serving,
)

pytestmark = pytest.mark.live

LIMIT = 100_000
SILENCE = 1.5  # an answer or a close on loopback takes milliseconds; this long without either is silence


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"SOCKETIO_MAX_PAYLOAD": str(LIMIT), "SOCKETIO_RATE_LIMIT_MAX_REQUESTS": "100000"}
    with serving(tmp_path_factory.mktemp("malformed"), env, {"raw": {}}) as running:
        yield running


def raw_user(server):
    """A raw WebSocket connection of an authenticated user (token in the query string)."""
    return open_raw(server, "&token=" + server.seeder.token("raw"))


def nested_list(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


CLOSES = {
    "truncated JSON": '42["ping"',
    "object instead of array": "42{nope}",
    "ack id of 400 digits": "42" + "9" * 400 + '["ping"]',
    "ack id of 5000 digits": "42" + "9" * 5000 + '["ping"]',
    "list nested 2000 deep": '420["ping",' + nested_list(2000) + "]",
    "object nested 20000 deep": '420["ping",' + nested_object(20_000) + "]",
    "integer of 4000 digits": '420["get_history",{"roomId":"general","limit":' + "9" * 4000 + "}]",
    "1e999": '420["get_history",{"roomId":"general","limit":1e999}]',
    "NaN": '420["ping",NaN]',
    "CONNECT_ERROR sent by a client": '44{"message":"x"}',
    "attachment count over 10 digits": '4512345678901-["ping",{"_placeholder":true,"num":0}]',
    "binary event announcing 11 attachments": '4511-["ping",' + ",".join(
        '{"_placeholder":true,"num":%d}' % n for n in range(11)) + "]",
    "binary event with an ack id of 200 digits": "451-" + "9" * 200 + '["ping",{"_placeholder":true,"num":0}]',
    "binary event without an attachment count": '45["ping"]',
    "binary ack without an id": '461-[{"_placeholder":true,"num":0}]',
    "binary ack nobody is waiting for, with arguments that are no array": '461-7{"_placeholder":true,"num":0}',
    "empty Engine.IO packet": "",
    "binary junk": b"\x00\xff\xfe\x01garbage",
}


@pytest.mark.parametrize("packet", CLOSES.values(), ids=CLOSES.keys())
def test_a_malformed_packet_closes_that_connection_only(server, control, log_after, packet):
    ws = raw_user(server)
    if isinstance(packet, bytes):
        ws.send_binary(packet)
    else:
        ws.send(packet)
    assert closes(ws, 5), f"the connection stayed open; it sent {ws.seen}"
    control.assert_unharmed()
    assert "Traceback" not in log_after()


def test_an_invalid_utf8_text_frame_is_closed_with_1007(server, control, log_after):
    ws = raw_user(server)
    ws.sock.sendall(frame(0x1, b'420["ping","\xff\xfe\xfd"]'))
    assert close_code(ws.sock) == 1007
    control.assert_unharmed()
    assert "Traceback" not in log_after()


def _id(value: int) -> str:
    return str(value)


REFUSED = {
    "event name is a number": ('420[123]', {"UNKNOWN_EVENT"}),
    "event name is an object": ('420[{"a":1}]', {"UNKNOWN_EVENT"}),
    "unknown event": ('420["no_such_event",{"x":1}]', {"UNKNOWN_EVENT"}),
    "event name of 50 kB": ('420["' + "x" * 50_000 + '"]', {"UNKNOWN_EVENT"}),
    "send_message with a list": ('420["send_message",[1,2,3]]', {"VALIDATION_ERROR"}),
    "send_message with a number as content": ('420["send_message",{"roomId":"lobby","content":123}]',
                                              {"VALIDATION_ERROR"}),
    "join_room with a number": ('420["join_room",12345]', {"VALIDATION_ERROR"}),
    "join_room with null": ('420["join_room",null]', {"VALIDATION_ERROR"}),
    "get_history with a text limit": ('420["get_history",{"roomId":"lobby","limit":"abc"}]', {"VALIDATION_ERROR"}),
    "mark_read with a negative seq": ('420["mark_read",{"roomId":"lobby","seq":-1}]', {"VALIDATION_ERROR"}),
    "user_action with 90 kB of data": ('420["user_action",{"action":"x","data":"' + "d" * 90_000 + '"}]',
                                       {"VALIDATION_ERROR"}),
    "user_action nested 900 deep": ('420["user_action",{"action":"x","data":' + nested_list(900) + "}]",
                                    {"VALIDATION_ERROR"}),
    "edit_message with a 2**70 id": ('420["edit_message",{"messageId":' + _id(2**70) + ',"content":"x"}]',
                                     {"VALIDATION_ERROR", "NOT_FOUND"}),
    "delete_message with a 2**63 id": ('420["delete_message",' + _id(2**63) + "]", {"VALIDATION_ERROR", "NOT_FOUND"}),
    "get_history with a 2**64 user": ('420["get_history",{"with":' + _id(2**64) + "}]",
                                      {"VALIDATION_ERROR", "USER_NOT_FOUND", "NOT_FOUND"}),
    "notification_read with a 2**64 id": ('420["notification_read",{"id":' + _id(2**64) + "}]",
                                          {"VALIDATION_ERROR", "NOT_FOUND"}),
    # JSON.stringify escapes a string cut inside an emoji this way: refused, the connection stays.
    "send_message with half an emoji": ('420["send_message",{"roomId":"lobby","content":"cut \\ud83d"}]',
                                        {"VALIDATION_ERROR"}),
    "ping with a lone low surrogate": ('420["ping",{"timestamp":"\\udc00"}]', {"VALIDATION_ERROR"}),
    "join_room with NUL in the name": ('420["join_room","lob\\u0000by"]', {"VALIDATION_ERROR"}),
    "send_message to a 2**53 user": ('420["send_message",{"to":' + _id(2**53) + ',"content":"x"}]',
                                     {"VALIDATION_ERROR", "USER_NOT_FOUND"}),
}


@pytest.mark.parametrize(("packet", "codes"), REFUSED.values(), ids=REFUSED.keys())
def test_a_bad_event_is_refused_with_a_client_error_code(server, control, log_after, packet, codes):
    ws = raw_user(server)
    ws.send(packet)
    answer = recv_until(ws, lambda received: received.startswith("430"), 5)
    assert answer is not None, f"closed instead of answering; it sent {ws.seen}"
    [ack] = json.loads(answer[3:])
    assert ack["success"] is False and ack["error"]["code"] in codes, ack
    ws.send('421["ping"]')  # the connection goes on
    assert recv_until(ws, lambda received: received.startswith("431")) is not None
    control.assert_unharmed()
    assert "Traceback" not in log_after()


def test_a_long_ack_id_is_answered_with_the_same_id(server, control):
    ws = raw_user(server)
    ack_id = "9" * 99
    ws.send("42" + ack_id + '["no_such_event"]')
    answer = recv_until(ws, lambda received: received.startswith("43"))
    assert answer.startswith("43" + ack_id + "[")
    assert json.loads(answer[2 + len(ack_id):])[0]["error"]["code"] == "UNKNOWN_EVENT"
    control.assert_unharmed()


ANSWERED_OR_CLOSED = {
    "event without a name": ["420[]"],
    "event that is null": ["420null"],
    "event on a namespace not connected": ['42/chat,0["join_room","lobby"]'],
    "event on a namespace that does not exist": ['42/nope,0["ping"]'],
    "placeholder pointing past the attachments": ['452-["ping",{"_placeholder":true,"num":5}]', b"\x01", b"\x02"],
    "placeholder with a text index": ['451-["ping",{"_placeholder":true,"num":"x"}]', b"\x01"],
}


@pytest.mark.parametrize("frames", ANSWERED_OR_CLOSED.values(), ids=ANSWERED_OR_CLOSED.keys())
def test_a_broken_event_gets_an_error_ack_or_a_close_never_silence(server, control, log_after, frames):
    ws = raw_user(server)
    for item in frames:
        ws.send_binary(item) if isinstance(item, bytes) else ws.send(item)
    try:
        answer = recv_until(ws, lambda received: received.startswith(("430", "44")), SILENCE)
    except AssertionError:
        answer = "silence"
    assert answer != "silence", f"neither an error ack nor a close (it sent {ws.seen})"
    if answer is not None:
        payload = answer[answer.index("["):] if answer.startswith("430") else answer[answer.index("{"):]
        assert "INTERNAL_ERROR" not in payload and "code" in payload, answer
    control.assert_unharmed()
    assert "Traceback" not in log_after()


def test_an_event_before_the_namespace_connect_is_refused_or_closed(server, control, log_after):
    ws = open_raw(server, connect=None)
    ws.send('420["ping"]')
    try:
        answer = recv_until(ws, lambda received: received.startswith(("430", "44")), SILENCE)
    except AssertionError:
        answer = "silence"
    assert answer != "silence", "an event before CONNECT got neither an error nor a close"
    control.assert_unharmed()
    assert "Traceback" not in log_after()


@pytest.mark.parametrize("packet", ["9", "6", "5", "3"], ids=["unknown type", "noop", "upgrade", "stray pong"])
def test_engine_io_junk_is_harmless(server, control, log_after, packet):
    ws = raw_user(server)
    ws.send(packet)
    ws.send('421["ping"]')
    answer = recv_until(ws, lambda received: received.startswith("431"), 5)
    assert answer is not None and json.loads(answer[3:])[0]["success"] is True
    control.assert_unharmed()
    assert "Traceback" not in log_after()


def test_binary_attachments_that_never_complete_do_not_pile_up_in_memory(server, control):
    """A binary event announcing a million attachments, then 20 MiB of attachment frames (each under
    the size limit): the server must close the connection or hold on to a bounded amount."""
    before = rss_bytes(server.process.pid)
    ws = open_raw(server)  # a guest is enough
    ws.send('451000000-["ping",{"_placeholder":true,"num":0}]')
    chunk, sent, open_ = b"\x01" * (LIMIT - 10_000), 0, True
    while sent < 20 * MIB:
        try:
            ws.send_binary(chunk)
        except Exception:  # noqa: BLE001 - closed by the server: the attack was refused
            open_ = False
            break
        sent += len(chunk)
    if open_:
        # Everything was accepted; one round trip on the control connection lets the server catch up.
        control.assert_unharmed()
    growth = rss_bytes(server.process.pid) - before
    assert not open_ or growth < 8 * MIB, (
        f"{sent / MIB:.0f} MiB of attachments for an event that never completes were accepted on one "
        f"connection and the server's memory grew by {growth / MIB:.1f} MiB"
    )
    control.assert_unharmed()
    assert health(server) == 200
