"""Socket.IO v5 namespace connection over raw WebSocket frames and long-polling: the CONNECT packet
comes first and Nexus's greeting after it, an unknown namespace is answered as socket.io does, a
refused CONNECT keeps Nexus's {message, data: {code, message}}, a second CONNECT closes the
connection, and a connection that joins no namespace is closed after the connect timeout. Also
the python-socketio entry points nexus.protocol.packets relies on (a test here fails loudly if a
release moves them)."""
from __future__ import annotations

import inspect
import json
import time
from typing import Any

import pytest
import requests
import socketio as python_socketio
from socketio import packet as sio_packet

from nexus.extensions import socketio
from tests.security.attack import closes, open_raw, recv_until, serving

CONNECT_TIMEOUT_MS = 600


# -- python-socketio's entry points -------------------------------------------------------------


def test_the_python_socketio_entry_points_nexus_wraps_are_still_there():
    server = python_socketio.Server
    for name, parameters in {
        "_handle_eio_message": ["self", "eio_sid", "data"],
        "_handle_connect": ["self", "eio_sid", "namespace", "data"],
        "_handle_event": ["self", "eio_sid", "namespace", "id", "data"],
        "_handle_event_internal": ["self", "server", "sid", "eio_sid", "data", "namespace", "id"],
        "_handle_ack": ["self", "eio_sid", "namespace", "id", "data"],
        "_handle_eio_connect": ["self", "eio_sid", "environ"],
        "_handle_eio_disconnect": ["self", "eio_sid", "reason"],
        "_send_packet": ["self", "eio_sid", "pkt"],
    }.items():
        assert list(inspect.signature(getattr(server, name)).parameters) == parameters, name
    manager = python_socketio.Manager()
    assert manager.callbacks == {}
    for name in ("sid_from_eio_sid", "is_connected", "get_namespaces", "pre_connect", "connect"):
        assert callable(getattr(manager, name)), name
    decoded = sio_packet.Packet(encoded_packet='52-/chat,7["e",{"_placeholder":true,"num":0}]')
    assert (decoded.packet_type, decoded.namespace, decoded.id, decoded.attachment_count) == (5, "/chat", 7, 2)


def test_the_engine_io_handlers_are_nexus_packet_layer(app):
    handlers = socketio.server.eio.handlers
    assert handlers["message"] == socketio.server._handle_eio_message
    assert getattr(handlers["connect"], "__self__", None).__class__.__name__ == "PacketLayer"
    assert handlers["disconnect"] == socketio.server._handle_eio_disconnect


def test_the_connect_packet_goes_out_before_the_namespace_greets(app, make_user, token_for):
    """python-socketio sends CONNECT once the connect handler returned; the greeting follows it."""
    alice = make_user("alice")
    client = socketio.test_client(app, auth={"token": token_for(alice)})
    sent: list[str] = []
    server = socketio.server
    send_packet, send_eio_packet = server._send_packet, server._send_eio_packet

    def packet(eio_sid: str, pkt: Any) -> None:
        encoded = pkt.encode()
        sent.append(encoded if isinstance(encoded, str) else encoded[0])
        send_packet(eio_sid, pkt)

    def eio_packet(eio_sid: str, pkt: Any) -> None:
        sent.append(pkt.data if isinstance(pkt.data, str) else "<attachment>")
        send_eio_packet(eio_sid, pkt)

    server._send_packet, server._send_eio_packet = packet, eio_packet
    try:
        client.connect(namespace="/presence", auth={"token": token_for(alice)})
    finally:
        server._send_packet, server._send_eio_packet = send_packet, send_eio_packet
    mine = [item for item in sent if item.startswith(("0/presence,", "2/presence,", "4/presence,"))]
    assert mine[0].startswith('0/presence,{"sid":'), sent
    assert any(item.startswith('2/presence,["online_users"') for item in mine[1:]), sent
    client.disconnect()


# -- the live server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    users = {"nina": {}, "otto": {}, "root": {"role": "admin"}}
    env = {"NEXUS_CONNECT_TIMEOUT_MS": str(CONNECT_TIMEOUT_MS)}
    with serving(tmp_path_factory.mktemp("namespaces"), env, users) as running:
        yield running


def packets_until(ws, match, timeout: float = 10) -> list[str]:
    recv_until(ws, match, timeout)
    return list(ws.seen)


def names(packets: list[str], namespace: str = "") -> list[str]:
    """The event names of the EVENT packets of one namespace ("" for `/`), in order."""
    prefix = "42" + (namespace + "," if namespace else "")
    found = []
    for packet in packets:
        if packet.startswith(prefix) and packet[len(prefix):len(prefix) + 1] in ("[",):
            found.append(json.loads(packet[len(prefix):])[0])
    return found


def token(server, name: str) -> str:
    return server.seeder.token(name)


def send_messages(server, user: str, room: str, count: int) -> None:
    ws = open_raw(server, "&token=" + token(server, user))
    ws.send(f'420["join_room","{room}"]')
    assert recv_until(ws, lambda packet: packet.startswith("430"))
    for n in range(count):
        ws.send(f'42{n + 1}["send_message",{{"roomId":"{room}","content":"m{n}"}}]')
        assert recv_until(ws, lambda packet, n=n: packet.startswith(f"43{n + 1}["))
    ws.close()


@pytest.mark.live
def test_on_the_default_namespace_connect_comes_first_then_welcome_online_list_notifications_catch_up(server):
    from nexus.services import notifications

    send_messages(server, "otto", "harbour", 2)
    with server.seeder.app.app_context():
        from nexus.extensions import db
        from nexus.services.users import find_by_username

        notifications.notify(find_by_username("nina").id, "Hello", "while you were away")
        db.session.commit()
    ws = open_raw(server, connect=None)
    ws.send("40" + json.dumps({"token": token(server, "nina"), "since": {"harbour": 0}}))
    seen = packets_until(ws, lambda packet: packet.startswith('42["room_message"') and '"m1"' in packet)
    assert seen[0].startswith('40{"sid":'), seen
    order = [name for name in names(seen) if name in ("connected", "online_users", "notification", "room_message")]
    assert order == ["connected", "online_users", "notification", "room_message", "room_message"], seen


@pytest.mark.live
@pytest.mark.parametrize(("namespace", "user", "first_event"), [
    ("/chat", "nina", "room_message"), ("/presence", "nina", "online_users"), ("/admin", "root", "stats"),
])
def test_on_each_namespace_the_connect_packet_comes_before_its_greeting(server, namespace, user, first_event):
    send_messages(server, "otto", "dock", 1)
    ws = open_raw(server, connect=None)
    ws.send(f"40{namespace}," + json.dumps({"token": token(server, user), "since": {"dock": 0}}))
    seen = packets_until(ws, lambda packet: packet.startswith(f'42{namespace},["{first_event}"'))
    mine = [packet for packet in seen if packet.startswith(("40" + namespace, "42" + namespace, "44" + namespace))]
    assert mine[0].startswith(f'40{namespace},{{"sid":'), seen
    assert first_event in names(seen, namespace), seen


@pytest.mark.live
def test_a_namespace_that_does_not_exist_is_answered_invalid_namespace_and_the_connection_goes_on(server, log_after):
    ws = open_raw(server, connect=None)
    ws.send('40/nope,{"token":"x"}')
    assert recv_until(ws, lambda packet: packet.startswith("44")) == '44/nope,{"message":"Invalid namespace"}'
    ws.send("40")
    assert recv_until(ws, lambda packet: packet.startswith("40")).startswith('40{"sid":')
    ws.send('421["ping"]')
    assert json.loads(recv_until(ws, lambda packet: packet.startswith("431"))[3:])[0]["success"] is True
    assert "Traceback" not in log_after()


@pytest.mark.live
def test_a_python_socketio_client_gets_invalid_namespace_as_its_connect_error(server):
    probe = python_socketio.Client(reconnection=False)
    errors: list[Any] = []
    probe.on("connect_error", errors.append, namespace="/nope")
    with pytest.raises(python_socketio.exceptions.ConnectionError):
        probe.connect(server.url, namespaces=["/nope"], transports=["websocket"], wait_timeout=5)
    assert errors == [{"message": "Invalid namespace"}]
    probe.disconnect()


REFUSALS = {
    "bad token on /": ('40{"token":"garbage"}',
                       '44{"message":"The token is not valid.","data":{"code":"INVALID_TOKEN",'
                       '"message":"The token is not valid."}}'),
    "a user on /admin": ('40/admin,{"token":"%s"}',
                         '44/admin,{"message":"Administrators only.","data":{"code":"FORBIDDEN",'
                         '"message":"Administrators only."}}'),
}


@pytest.mark.live
@pytest.mark.parametrize(("connect", "answer"), REFUSALS.values(), ids=REFUSALS.keys())
def test_a_refused_connect_keeps_nexus_message_and_code(server, connect, answer):
    ws = open_raw(server, connect=None)
    ws.send(connect.replace("%s", token(server, "nina")))
    assert recv_until(ws, lambda packet: packet.startswith("44")) == answer
    assert not [packet for packet in ws.seen if packet.startswith("42")], ws.seen


@pytest.mark.live
def test_a_second_connect_to_a_joined_namespace_closes_the_connection_and_leaves_no_ghost(server, control,
                                                                                         log_after):
    ws = open_raw(server, "&token=" + token(server, "otto"))
    ws.send("40")
    assert closes(ws, 5), ws.seen
    control.assert_unharmed()
    online = control.client.sio.call("get_online_users", timeout=10)["users"]
    assert "otto" not in {user.get("username") for user in online}, online
    written = log_after()
    assert written.count("closing that connection") == 1 and "Traceback" not in written, written


# -- the connect timeout ---------------------------------------------------------------------------


@pytest.mark.live
def test_a_websocket_that_joins_no_namespace_is_closed_after_the_connect_timeout(server, log_after):
    idle = open_raw(server, connect=None)
    joined = open_raw(server)
    started = time.monotonic()
    assert closes(idle, 5), idle.seen
    waited = time.monotonic() - started
    assert CONNECT_TIMEOUT_MS / 1000 * 0.8 <= waited < CONNECT_TIMEOUT_MS / 1000 + 2, waited
    joined.send('421["ping"]')  # a connection that joined a namespace stays
    assert recv_until(joined, lambda packet: packet.startswith("431")) is not None
    assert "Traceback" not in log_after()


@pytest.mark.live
def test_a_long_polling_session_that_joins_no_namespace_is_closed_after_the_connect_timeout(server):
    base = server.url + "/socket.io/?EIO=4&transport=polling"
    opened = requests.get(base, timeout=5)
    assert opened.status_code == 200 and opened.text.startswith("0{"), opened.text
    sid = json.loads(opened.text[1:])["sid"]
    time.sleep(CONNECT_TIMEOUT_MS / 1000 + 1)
    answer = requests.get(base + "&sid=" + sid, timeout=5)
    # Closed: the CLOSE packet (if the session still had it queued), then the session is unknown.
    assert answer.status_code == 400 or answer.text == "1", (answer.status_code, answer.text)
    assert requests.get(base + "&sid=" + sid, timeout=5).status_code == 400


@pytest.mark.live
def test_a_long_polling_session_that_connects_stays_past_the_connect_timeout(server):
    base = server.url + "/socket.io/?EIO=4&transport=polling"
    sid = json.loads(requests.get(base, timeout=5).text[1:])["sid"]
    assert requests.post(base + "&sid=" + sid, data="40", timeout=5).status_code == 200
    assert requests.get(base + "&sid=" + sid, timeout=5).text.startswith('40{"sid":')
    time.sleep(CONNECT_TIMEOUT_MS / 1000 + 0.5)
    assert requests.post(base + "&sid=" + sid, data='421["ping"]', timeout=5).status_code == 200
    answer = requests.get(base + "&sid=" + sid, timeout=5)
    assert answer.status_code == 200 and '431[{"success":true' in answer.text, answer.text



@pytest.mark.live
def test_a_refused_connect_does_not_stop_the_connect_timeout(server):
    ws = open_raw(server, connect=None)
    ws.send('40{"token":"garbage"}')
    assert recv_until(ws, lambda packet: packet.startswith("44")) is not None
    assert closes(ws, CONNECT_TIMEOUT_MS / 1000 + 2), ws.seen


@pytest.mark.live
def test_a_connection_that_joined_and_left_its_namespace_is_not_closed_by_the_connect_timeout(server):
    ws = open_raw(server)
    ws.send("41")
    time.sleep(CONNECT_TIMEOUT_MS / 1000 + 0.5)
    ws.send("40")
    assert recv_until(ws, lambda packet: packet.startswith("40")).startswith('40{"sid":')


# -- connects in flight ---------------------------------------------------------------------


def test_no_more_connects_than_allowed_are_handled_at_once_and_the_others_wait_their_turn(
        app_factory, make_user, token_for, monkeypatch):
    """NEXUS_CONNECTS_IN_FLIGHT bounds the CONNECTs in progress; the others wait, and all get in."""
    import threading

    from nexus.realtime.namespaces.base import NexusNamespace

    app = app_factory(connects_in_flight=2)
    users = [make_user(f"turn{n}") for n in range(6)]
    tokens = [token_for(user) for user in users]
    lock = threading.Lock()
    state = {"now": 0, "most": 0}
    opened = NexusNamespace._open_session

    def slow_open(self, sid, auth):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        try:
            time.sleep(0.2)
            return opened(self, sid, auth)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(NexusNamespace, "_open_session", slow_open)
    clients: list[Any] = []

    def connect(token: str) -> None:
        client = socketio.test_client(app, auth={"token": token})
        with lock:
            clients.append(client)

    threads = [threading.Thread(target=connect, args=(token,)) for token in tokens]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    try:
        assert state["most"] == 2
        assert len(clients) == 6 and all(client.is_connected() for client in clients)
        assert time.monotonic() - started >= 0.55  # three turns of two
    finally:
        for client in clients:
            client.disconnect()
