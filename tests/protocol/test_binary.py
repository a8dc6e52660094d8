"""Binary events and acks (Socket.IO packet types 5 and 6): as socket.io-client sends them, over raw
WebSocket frames and with the official JavaScript client on both transports, within bounds (the
attachment count, the payload limit, attachments before any other packet); Nexus's own events
refuse binary content with VALIDATION_ERROR. The server is Nexus with a test-only `/binary`
namespace (tests/protocol/binary_server.py): no public event takes binary."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from typing import Any

import pytest
from socketio import packet as sio_packet

from nexus.protocol.packets import JsonPacket, ProtocolViolation, holds_bytes, reconstruct
from tests.security.attack import closes, open_raw, recv_until
from tests.support import services
from tests.support.live import LiveServer, LiveServerFactory

LIMIT = 100_000
MAX_ATTACHMENTS = 10
SCRIPT = services.ROOT / "tests" / "js" / "binary.mjs"
PLACEHOLDER = '{"_placeholder":true,"num":%d}'


# -- encoding, without a server ---------------------------------------------------------------


def test_json_payloads_are_encoded_without_looking_for_bytes():
    assert JsonPacket.data_is_binary(["x", {"a": b"\x01"}]) is False  # no walk when building a packet
    assert JsonPacket(sio_packet.EVENT, data=["x", {"a": 1}], namespace="/chat").encode() == '2/chat,["x",{"a":1}]'


def test_a_payload_with_bytes_goes_out_as_a_binary_event_with_attachments():
    encoded = JsonPacket(sio_packet.EVENT, data=["x", {"a": b"\x01", "b": [bytearray(b"\x02")]}]).encode()
    assert encoded == ['52-["x",{"a":' + PLACEHOLDER % 0 + ',"b":[' + PLACEHOLDER % 1 + "]}]", b"\x01",
                       bytearray(b"\x02")]
    ack = JsonPacket(sio_packet.ACK, data=[{"file": b"\xff"}], namespace="/binary", id=7).encode()
    assert ack == ['61-/binary,7[{"file":' + PLACEHOLDER % 0 + "}]", b"\xff"]


def test_a_payload_that_is_not_json_and_holds_no_bytes_still_fails_loudly():
    with pytest.raises(TypeError):
        JsonPacket(sio_packet.EVENT, data=["x", object()]).encode()


def test_looking_for_bytes_costs_no_recursion():
    deep: Any = b"\x01"
    for _ in range(50_000):
        deep = [deep]
    assert holds_bytes(deep) is True
    assert holds_bytes([{"a": [1, "x", None]}]) is False


def test_placeholders_are_replaced_in_place_at_any_depth():
    deep: Any = {"_placeholder": True, "num": 1}
    for _ in range(50_000):
        deep = [deep]
    data = ["e", deep, {"k": {"_placeholder": True, "num": 0}}]
    rebuilt = reconstruct(data, [b"a", b"b"])
    assert rebuilt[2] == {"k": b"a"}
    inner = rebuilt[1]
    while isinstance(inner, list):
        inner = inner[0]
    assert inner == b"b"
    assert reconstruct(["e", {"_placeholder": False, "num": 9}], []) == ["e", {"_placeholder": False, "num": 9}]


@pytest.mark.parametrize("num", [1, -1, True, 0.0, "0", None, [0]])
def test_a_placeholder_that_points_at_no_attachment_is_a_violation(num):
    with pytest.raises(ProtocolViolation):
        reconstruct(["e", {"_placeholder": True, "num": num}], [b"only one"])


# -- the live server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Nexus with the test-only `/binary` namespace, SOCKETIO_MAX_PAYLOAD of 100 kB."""
    base = tmp_path_factory.mktemp("binary")
    factory = LiveServerFactory(base, secret=secrets.token_urlsafe(40))
    try:
        url, seeder = factory.database()
        seeder.user("raw")
        port = services.free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("NEXUS_", "SOCKETIO_", "REDIS_"))},
            "PORT": str(port), "DATABASE_URL": url, "JWT_SECRET": factory.secret, "NEXUS_ENV": "development",
            "NEXUS_INSTANCE_PATH": str(base / "instance"), "NEXUS_INSTANCE_ID": "binary-0",
            "NEXUS_DEMO_USERS": "0", "PYTHONUNBUFFERED": "1", "SOCKETIO_RATE_LIMIT_MAX_REQUESTS": "100000",
            "SOCKETIO_MAX_PAYLOAD": str(LIMIT), "NEXUS_MAX_ATTACHMENTS": str(MAX_ATTACHMENTS),
        }
        env.pop("MESSAGE_QUEUE_URL", None)
        running = LiveServer([sys.executable, "-m", "tests.protocol.binary_server", "serve"], env, port,
                             base / "server.log")
        factory.servers.append(running)
        running.wait_ready()
        running.seeder = seeder
        yield running
    finally:
        factory.stop_all()


def on_binary(server):
    """A raw WebSocket connection (a guest) that joined `/` and `/binary`."""
    ws = open_raw(server)
    ws.send("40/binary,")
    assert recv_until(ws, lambda packet: packet.startswith(("40/binary,", "44/binary,"))).startswith("40/binary,")
    return ws


def send(ws, frames) -> None:
    for item in frames:
        ws.send_binary(item) if isinstance(item, bytes) else ws.send(item)


def receive_binary_packet(ws, prefix: str) -> tuple[Any, list[bytes]]:
    """The next packet starting with `prefix`, and its binary attachments (read as raw frames)."""
    header = recv_until(ws, lambda packet: packet.startswith(prefix))
    assert header is not None, f"closed; it sent {ws.seen}"
    dash = header.index("-")
    count = int(header[2:dash])  # "46<count>-..."
    attachments = []
    while len(attachments) < count:
        frame = ws.recv()
        assert isinstance(frame, bytes), f"a text frame {frame!r} where an attachment was expected"
        attachments.append(frame)
    return json.loads(header[header.index("["):]), attachments


@pytest.mark.live
def test_a_binary_event_gets_its_handler_bytes_and_a_binary_ack(server, log_after):
    ws = on_binary(server)
    send(ws, ['452-/binary,7["echo",' + PLACEHOLDER % 0 + ',{"n":' + PLACEHOLDER % 1 + ',"t":"x"}]',
              b"\x01\x02", b""])
    [ack], attachments = receive_binary_packet(ws, "462-/binary,7[")
    assert ack["success"] is True
    assert ack["types"] == ["bytes", {"n": "bytes", "t": "str"}]
    assert ack["args"] == [{"_placeholder": True, "num": 0}, {"n": {"_placeholder": True, "num": 1}, "t": "x"}]
    assert attachments == [b"\x01\x02", b""]
    assert "Traceback" not in log_after()


@pytest.mark.live
def test_as_many_attachments_as_allowed_are_accepted(server):
    ws = on_binary(server)
    args = ",".join(PLACEHOLDER % n for n in range(MAX_ATTACHMENTS))
    send(ws, [f"45{MAX_ATTACHMENTS}-/binary,1[\"echo\",{args}]", *(bytes([n]) for n in range(MAX_ATTACHMENTS))])
    [ack], attachments = receive_binary_packet(ws, f"46{MAX_ATTACHMENTS}-/binary,1[")
    assert ack["types"] == ["bytes"] * MAX_ATTACHMENTS
    assert attachments == [bytes([n]) for n in range(MAX_ATTACHMENTS)]


@pytest.mark.live
def test_a_binary_event_without_an_ack_and_without_attachments_is_handled(server):
    ws = on_binary(server)
    send(ws, ['450-/binary,["echo","no bytes after all"]', '42/binary,3["echo"]'])
    answer = recv_until(ws, lambda packet: packet.startswith("43/binary,3"))
    assert json.loads(answer[answer.index("["):])[0]["success"] is True


REFUSED = {
    "send_message with bytes as content": '451-0["send_message",{"roomId":"lobby","content":%s}]',
    "ping with bytes": '451-0["ping",%s]',
    "join_room with bytes": '451-0["join_room",%s]',
    "user_action with bytes nested 900 deep": '451-0["user_action",{"action":"x","data":'
                                              + "[" * 900 + "%s" + "]" * 900 + "}]",
}


@pytest.mark.live
@pytest.mark.parametrize("header", REFUSED.values(), ids=REFUSED.keys())
def test_nexus_events_refuse_binary_content_with_an_ack(server, control, log_after, header):
    ws = open_raw(server, "&token=" + server.seeder.token("raw"))
    send(ws, [header % (PLACEHOLDER % 0), b"\x00binary"])
    answer = recv_until(ws, lambda packet: packet.startswith("430"))
    assert answer is not None, f"closed instead of answering; it sent {ws.seen}"
    [ack] = json.loads(answer[3:])
    assert ack["success"] is False and ack["error"]["code"] == "VALIDATION_ERROR", ack
    assert "binary" in ack["error"]["message"]
    ws.send('421["ping"]')  # the connection goes on
    assert json.loads(recv_until(ws, lambda packet: packet.startswith("431"))[3:])[0]["success"] is True
    control.assert_unharmed()
    assert "Traceback" not in log_after()


@pytest.mark.live
def test_an_unknown_event_with_bytes_is_unknown(server):
    ws = open_raw(server)
    send(ws, ['451-4["no_such_event",' + PLACEHOLDER % 0 + "]", b"\x01"])
    [ack] = json.loads(recv_until(ws, lambda packet: packet.startswith("434"))[3:])
    assert ack["error"]["code"] == "UNKNOWN_EVENT"


@pytest.mark.live
def test_a_binary_ack_nobody_waits_for_is_dropped_quietly(server, log_after):
    ws = on_binary(server)
    send(ws, ['461-/binary,55[' + PLACEHOLDER % 0 + "]", b"\x01", '43/binary,56["text ack"]'])
    ws.send('42/binary,8["echo"]')
    answer = recv_until(ws, lambda packet: packet.startswith("43/binary,8"))
    assert json.loads(answer[answer.index("["):])[0]["success"] is True
    assert "callback" not in log_after().lower()


def _echo(count: int, namespace: str = "/binary,") -> str:
    return f"45{count}-{namespace}[\"echo\"," + ",".join(PLACEHOLDER % n for n in range(count)) + "]"


CLOSES = {
    "more attachments than allowed": [_echo(MAX_ATTACHMENTS + 1)] + [b"\x01"] * 40,
    "attachment count of seven digits": ["451000000-/binary,[\"echo\"," + PLACEHOLDER % 0 + "]"] + [b"\x01"] * 40,
    "attachments over the payload limit": [_echo(3), b"\x01" * 40_000, b"\x02" * 40_000, b"\x03" * 40_000],
    "a text packet before the attachments": [_echo(2), b"\x01", '42/binary,["echo"]', b"\x02"],
    "an attachment with no binary packet": [b"\x01\x02", b"\x03"],
    "placeholder past the attachments": ['451-/binary,["echo",' + PLACEHOLDER % 1 + "]", b"\x01"],
    "placeholder with a negative index": ['451-/binary,["echo",' + PLACEHOLDER % -1 + "]", b"\x01"],
    "placeholder with a boolean index": ['451-/binary,["echo",{"_placeholder":true,"num":true}]', b"\x01"],
    "placeholder without an index": ['451-/binary,["echo",{"_placeholder":true}]', b"\x01"],
    "binary event on a namespace not joined": [_echo(1, "/chat,"), b"\x01"],
    "binary event on a namespace that does not exist": [_echo(1, "/nope,"), b"\x01"],
    "binary event without a name": ["450-/binary,[]"],
    "binary event whose arguments are an object": ['451-/binary,{"a":' + PLACEHOLDER % 0 + "}", b"\x01"],
    "binary ack without an id": ["461-/binary,[" + PLACEHOLDER % 0 + "]", b"\x01"],
    "attachment count that is not a number": ["45x-/binary,[\"echo\"]"],
    "attachment count in other digits": ["45\u0661-/binary,[\"echo\"," + PLACEHOLDER % 0 + "]", b"\x01"],
    "binary event with no dash": ["451/binary,[\"echo\"]"],
    "truncated JSON in a binary packet": ['451-/binary,["echo",{"_placeholder":true', b"\x01"],
}


@pytest.mark.live
@pytest.mark.parametrize("frames", CLOSES.values(), ids=CLOSES.keys())
def test_past_a_bound_the_connection_closes_with_one_warning_line(server, control, log_after, frames):
    ws = on_binary(server)
    try:
        send(ws, frames)
    except Exception:  # noqa: BLE001 - closed by the server while frames were still going out
        pass
    assert closes(ws, 5), f"the connection stayed open; it sent {ws.seen}"
    control.assert_unharmed()
    written = log_after()
    assert "Traceback" not in written
    assert written.count("closing that connection") == 1, written


# -- the official JavaScript client ------------------------------------------------------------


@pytest.mark.live
@pytest.mark.node
@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_socket_io_client_sends_and_receives_binary_events_and_acks(server, transport):
    services.require("node")
    scenario = {"url": server.url, "transports": [transport], "timeoutMs": 8000}
    result = subprocess.run([shutil.which("node"), str(SCRIPT), json.dumps(scenario)], cwd=services.ROOT,
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["transport"] == transport
    # Client -> server: the handler got bytes where the client sent Uint8Array, Buffer, ArrayBuffer.
    assert report["echo"] == {
        "success": True,
        "types": ["bytes", {"nested": "bytes", "text": "str"}, "bytes"],
        "args": [{"binary": [1, 2, 3]}, {"nested": {"binary": [4, 5]}, "text": "x"}, {"binary": []}],
    }
    # Server -> client: a binary event with an ack, answered by the client with binary.
    assert report["blob"] == {"data": {"binary": [0, 1, 2, 255]}, "label": "from the server"}
    assert report["answered"] == {
        "types": ["bytes", {"inner": "bytes"}],
        "args": [{"binary": [9, 8, 7]}, {"inner": {"binary": [6]}}],
    }
    assert report["refused"]["success"] is False and report["refused"]["error"]["code"] == "VALIDATION_ERROR"
    assert report["ping"]["success"] is True


# -- the declaration, with Flask-SocketIO's test client ---------------------------------------------


def test_an_event_refuses_binary_unless_its_handler_declares_it(app, socket_client):
    from nexus.realtime.namespaces.base import takes_binary

    client = socket_client()
    refused = client.emit("ping", {"timestamp": b"\x01"}, callback=True)
    assert refused["success"] is False and refused["error"]["code"] == "VALIDATION_ERROR"
    assert client.emit("ping", {"timestamp": 1}, callback=True)["success"] is True

    namespace = type(app.extensions["socketio"].server.namespace_handlers["/"])
    received: list[Any] = []

    @takes_binary
    def on_upload(self, session, payload=None, *_):
        received.append(payload)
        return {"size": len(payload["file"])}

    namespace.on_upload = on_upload
    try:
        assert client.emit("upload", {"file": b"\x00\x01\x02"}, callback=True) == {"success": True, "size": 3}
    finally:
        del namespace.on_upload
    assert received == [{"file": b"\x00\x01\x02"}]
