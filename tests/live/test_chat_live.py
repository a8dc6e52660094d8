"""Chat over a real server with python-socketio clients: rooms, direct messages, privacy, retries, catch-up."""
from __future__ import annotations

import threading
import time

import pytest
import requests
import socketio

pytestmark = pytest.mark.live
WAIT = 10.0


class Chatter:
    """A python-socketio client that records events and waits for them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sio = socketio.Client(reconnection=False)
        self.events: list[tuple[str, object]] = []
        self._cond = threading.Condition()
        self.sio.on("*", self._record)

    def _record(self, event, *args):
        with self._cond:
            self.events.append((event, args[0] if len(args) == 1 else list(args)))
            self._cond.notify_all()

    def connect(self, url, transport, token=None, auth_extra=None):
        auth = {**({"token": token} if token else {}), **(auth_extra or {})} or None
        self.sio.connect(url, auth=auth, transports=[transport], wait_timeout=10)
        self.wait_count("connected", 1)
        assert self.sio.transport() == transport
        return self

    def call(self, event, data=None):
        return self.sio.call(event, data, timeout=WAIT)

    def received(self, event):
        with self._cond:
            return [data for name, data in self.events if name == event]

    def wait_count(self, event, count, timeout=WAIT):
        with self._cond:
            ok = self._cond.wait_for(lambda: len([1 for n, _ in self.events if n == event]) >= count, timeout)
        assert ok, f"{self.name}: {count} x {event!r} expected, got {self.received(event)}"
        return self.received(event)

    def quiet(self, event, window=0.5):
        """No `event` arrives within a short window."""
        before = len(self.received(event))
        with self._cond:
            self._cond.wait_for(lambda: len([1 for n, _ in self.events if n == event]) > before, window)
        assert len(self.received(event)) == before, f"{self.name} got unexpected {event}: {self.received(event)}"


@pytest.fixture
def chat_server(live_server):
    url, seeder = live_server.database()
    users = {name: seeder.user(name) for name in ("alice", "bob", "carol")}
    server = live_server.start(url, env={"NEXUS_TYPING_TIMEOUT_S": "1", "NEXUS_CATCHUP_LIMIT": "60"})
    server.seeder, server.users = seeder, users
    return server


@pytest.fixture
def chatters():
    made = []

    def make(name):
        made.append(Chatter(name))
        return made[-1]

    yield make
    for chatter in made:
        if chatter.sio.connected:
            threading.Thread(target=chatter.sio.disconnect, daemon=True).start()


def connect(chatters, server, name, transport="websocket", **kwargs):
    return chatters(name).connect(server.url, transport, token=server.seeder.token(name), **kwargs)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_two_users_chat_and_each_sees_the_others_message_once(chat_server, chatters, transport):
    alice = connect(chatters, chat_server, "alice", transport)
    bob = connect(chatters, chat_server, "bob", transport)
    assert alice.call("join_room", "general")["success"] is True  # bare room name
    joined = bob.call("join_room", {"room": "general"})  # {room} object
    assert joined["roomId"] == joined["room"] == "general" and joined["memberCount"] == 2
    [announced] = alice.wait_count("room_joined", 1)
    assert announced["user"]["username"] == "bob" and announced["memberCount"] == 2

    sent_a = alice.call("send_message", {"roomId": "general", "content": "hi bob", "type": "text"})
    sent_b = bob.call("send_message", {"roomId": "general", "content": "hi alice", "type": "text"})
    assert sent_a["success"] and sent_b["success"]
    assert sent_b["message"]["seq"] == sent_a["message"]["seq"] + 1
    for chatter in (alice, bob):
        messages = chatter.wait_count("room_message", 2)
        assert [m["content"] for m in messages] == ["hi bob", "hi alice"]
        chatter.quiet("room_message")
        assert chatter.sio.transport() == transport
    assert bob.received("room_message")[0] == sent_a["message"]


def test_direct_message_reaches_every_socket_of_both_users_but_the_sending_one(chat_server, chatters):
    alice = connect(chatters, chat_server, "alice")
    alice_phone = connect(chatters, chat_server, "alice", "polling")
    bob = connect(chatters, chat_server, "bob")
    bob_phone = connect(chatters, chat_server, "bob", "polling")
    ack = bob.call("send_message", {"to": chat_server.users["alice"]["id"], "content": "psst", "type": "text"})
    assert ack["success"] and ack["message"]["to"] == str(chat_server.users["alice"]["id"])
    for receiver in (alice, alice_phone, bob_phone):
        [message] = receiver.wait_count("new_message", 1)
        assert message == ack["message"] and message["from"] == str(chat_server.users["bob"]["id"])
    bob.quiet("new_message")
    history = alice.call("get_history", {"with": chat_server.users["bob"]["id"]})
    assert [m["content"] for m in history["messages"]] == ["psst"]


def test_non_members_cannot_use_a_private_room(chat_server, chatters):
    owner_token = chat_server.seeder.token("alice")
    created = requests.post(
        chat_server.url + "/api/rooms",
        json={"name": "secret", "kind": "private"},
        headers={"Authorization": f"Bearer {owner_token}"},
        timeout=5,
    )
    assert created.status_code == 201, created.text
    added = requests.post(
        chat_server.url + "/api/rooms/secret/members",
        json={"userId": chat_server.users["bob"]["id"]},
        headers={"Authorization": f"Bearer {owner_token}"},
        timeout=5,
    )
    assert added.status_code == 201
    alice = connect(chatters, chat_server, "alice")
    bob = connect(chatters, chat_server, "bob")
    carol = connect(chatters, chat_server, "carol")
    assert alice.call("join_room", "secret")["success"] and bob.call("join_room", "secret")["success"]

    assert carol.call("join_room", "secret")["error"]["code"] == "FORBIDDEN"
    refused = carol.call("send_message", {"roomId": "secret", "content": "let me in", "type": "text"})
    assert refused["error"]["code"] == "FORBIDDEN"
    assert carol.call("get_history", {"roomId": "secret"})["error"]["code"] == "FORBIDDEN"
    assert carol.call("room_info", "secret")["error"]["code"] == "FORBIDDEN"
    alice.quiet("room_message")
    bob.quiet("room_message", window=0.1)
    assert alice.call("get_history", {"roomId": "secret"})["messages"] == []
    carol_rest = requests.get(
        chat_server.url + "/api/rooms/secret/messages",
        headers={"Authorization": f"Bearer {chat_server.seeder.token('carol')}"},
        timeout=5,
    )
    assert carol_rest.status_code == 403 and carol_rest.json()["error"]["code"] == "FORBIDDEN"


BAD_PAYLOADS = [
        None,
        "just text",
        ["general", "hi"],
        42,
        {"roomId": "general"},
        {"roomId": "general", "content": ""},
        {"roomId": "general", "content": "   \n\t  "},
        {"roomId": "general", "content": "x" * 4001},
        {"roomId": "general", "content": {"$gt": ""}},
        {"roomId": "general", "content": ["a"]},
        {"roomId": "general", "content": "hi", "type": "video"},
        {"roomId": "general", "content": "hi", "type": "image"},
        {"roomId": ["general"], "content": "hi"},
        {"roomId": "../etc/passwd", "content": "hi"},
        {"roomId": "general", "to": 2, "content": "hi"},
        {"to": "bob", "content": "hi"},
        {"roomId": "general", "content": "hi", "clientMsgId": "x" * 65},
        {"roomId": "general", "content": "hi", "type": "image", "attachment": {"url": "javascript:alert(1)"}},
]


def test_bad_payloads_get_validation_errors_and_change_nothing(chat_server, chatters):
    alice = connect(chatters, chat_server, "alice")
    bob = connect(chatters, chat_server, "bob")
    alice.call("join_room", "general")
    bob.call("join_room", "general")
    for payload in BAD_PAYLOADS:
        answer = alice.call("send_message", payload)
        assert answer["success"] is False, payload
        assert answer["error"]["code"] == "VALIDATION_ERROR" and answer["error"]["message"], (payload, answer)
    for event, payload in [("join_room", 5), ("join_room", {"room": {"x": 1}}), ("get_history", {"roomId": "general", "limit": "lots"}),
                           ("edit_message", {"messageId": "one", "content": "x"}), ("mark_read", {"roomId": "general"})]:
        assert alice.call(event, payload)["error"]["code"] == "VALIDATION_ERROR", (event, payload)
    bob.quiet("room_message", window=0.3)
    assert alice.call("get_history", {"roomId": "general"})["messages"] == []
    assert alice.sio.connected and bob.sio.connected


def test_client_msg_id_retry_stores_and_broadcasts_once(chat_server, chatters):
    alice = connect(chatters, chat_server, "alice")
    bob = connect(chatters, chat_server, "bob")
    alice.call("join_room", "general")
    bob.call("join_room", "general")
    payload = {"roomId": "general", "content": "only once", "type": "text", "clientMsgId": "msg-1"}
    first = alice.call("send_message", payload)
    second = alice.call("send_message", payload)
    assert first["duplicate"] is False and second["duplicate"] is True
    assert second["message"] == first["message"]
    bob.wait_count("room_message", 1)
    bob.quiet("room_message")
    assert len(alice.call("get_history", {"roomId": "general"})["messages"]) == 1


def test_catch_up_after_a_forced_disconnect(chat_server, chatters):
    alice = connect(chatters, chat_server, "alice")
    bob = connect(chatters, chat_server, "bob")
    alice.call("join_room", "general")
    bob.call("join_room", "general")
    alice.call("send_message", {"roomId": "general", "content": "before", "type": "text"})
    last_seen = bob.wait_count("room_message", 1)[-1]["seq"]

    bob.sio.eio.disconnect(abort=True)  # the network drops: no goodbye
    sent = [
        alice.call("send_message", {"roomId": "general", "content": f"missed {i}", "type": "text"})["message"]
        for i in range(50)
    ]

    back = connect(chatters, chat_server, "bob")
    rejoin = back.call("join_room", {"room": "general", "since": last_seen})
    assert rejoin["catchUp"] == {"complete": True, "since": last_seen, "lastSeq": sent[-1]["seq"], "count": 50}
    after = alice.call("send_message", {"roomId": "general", "content": "after", "type": "text"})["message"]
    received = back.wait_count("room_message", 51)
    assert [m["seq"] for m in received] == [m["seq"] for m in sent] + [after["seq"]]
    assert [m["content"] for m in received[:50]] == [f"missed {i}" for i in range(50)]
    back.quiet("room_message")


def test_catch_up_in_the_handshake_and_its_bound(chat_server, chatters):
    alice = connect(chatters, chat_server, "alice")
    alice.call("join_room", "general")
    seqs = [
        alice.call("send_message", {"roomId": "general", "content": f"m{i}", "type": "text"})["message"]["seq"]
        for i in range(5)
    ]
    bob = connect(chatters, chat_server, "bob", auth_extra={"since": {"general": seqs[1]}})
    received = bob.wait_count("room_message", 3)
    assert [m["seq"] for m in received] == seqs[2:]
    # The rejoin made bob a live member: new messages follow the replay.
    alice.call("send_message", {"roomId": "general", "content": "live", "type": "text"})
    assert bob.wait_count("room_message", 4)[-1]["content"] == "live"

    for i in range(61):
        alice.call("send_message", {"roomId": "general", "content": f"flood {i}", "type": "text"})
    carol = connect(chatters, chat_server, "carol")
    far = carol.call("join_room", {"room": "general", "since": 0})
    assert far["catchUp"]["complete"] is False and far["catchUp"]["reason"] == "GAP_TOO_LARGE"
    carol.quiet("room_message", window=0.3)


def test_typing_expires_by_itself_and_is_coalesced(chat_server, chatters):
    alice = connect(chatters, chat_server, "alice")
    bob = connect(chatters, chat_server, "bob")
    alice.call("join_room", "general")
    bob.call("join_room", "general")
    started = time.monotonic()
    for _ in range(3):
        alice.sio.emit("typing_start", "general")
    first, stopped = bob.wait_count("user_typing", 2, timeout=5)
    assert first["isTyping"] is True and first["user"]["username"] == "alice"
    assert stopped["isTyping"] is False
    assert time.monotonic() - started < 4
    alice.quiet("user_typing", window=0.2)  # never to the typist
    bob.quiet("user_typing", window=0.5)


def test_history_pages_both_ways(chat_server, chatters):
    alice = connect(chatters, chat_server, "alice")
    alice.call("join_room", "general")
    for i in range(12):
        alice.call("send_message", {"roomId": "general", "content": f"n{i}", "type": "text"})
    newest = alice.call("get_history", {"roomId": "general", "limit": 5})
    assert [m["seq"] for m in newest["messages"]] == [12, 11, 10, 9, 8] and newest["hasMore"] is True
    older = alice.call("get_history", {"roomId": "general", "limit": 5, "before": 8})
    assert [m["seq"] for m in older["messages"]] == [7, 6, 5, 4, 3]
    oldest = alice.call("get_history", {"roomId": "general", "limit": 5, "before": 3})
    assert [m["seq"] for m in oldest["messages"]] == [2, 1] and oldest["hasMore"] is False
    forward = alice.call("get_history", {"roomId": "general", "limit": 5, "after": 2, "order": "asc"})
    assert [m["seq"] for m in forward["messages"]] == [3, 4, 5, 6, 7] and forward["hasMore"] is True
    rest = requests.get(
        chat_server.url + "/api/rooms/general/messages?after=9&order=asc",
        headers={"Authorization": f"Bearer {chat_server.seeder.token('alice')}"},
        timeout=5,
    ).json()
    assert [m["seq"] for m in rest["messages"]] == [10, 11, 12] and rest["hasMore"] is False
