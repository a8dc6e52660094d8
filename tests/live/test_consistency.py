"""Against a real server, with python-socketio clients over WebSocket: what one sent is never unread for
one (in `connected`, `GET /api/rooms` and `GET /api/conversations`, with many senders at once);
`join_room {kind: "private"}` makes a private room or is refused, never a public one; sending takes a
socket in the room; `rate_limit_exceeded` carries `{event, retryAfterMs, message}`."""
from __future__ import annotations

import threading

import pytest
import requests

from tests.support.cluster import Client

pytestmark = pytest.mark.live
WAIT = 10.0


@pytest.fixture
def server(live_server):
    url, seeder = live_server.database()
    for name in ("alice", "bob", "carol"):
        seeder.user(name)
    started = live_server.start(url)
    started.seeder = seeder
    return started


def user_id(server, name: str) -> int:
    return server.seeder.user(name)["id"]


def get(server, name: str, path: str) -> dict:
    response = requests.get(server.url + path, headers={"Authorization": f"Bearer {server.seeder.token(name)}"},
                            timeout=WAIT)
    assert response.status_code == 200, response.text
    return response.json()


def open_as(clients, server, name: str) -> Client:
    return clients(name, server, server.seeder.token(name))


def call(client: Client, event: str, data=None) -> dict:
    return client.sio.call(event, data, timeout=WAIT)


def text(room: str, content: str) -> dict:
    return {"roomId": room, "content": content, "type": "text"}


def test_what_one_sent_is_never_unread_for_one(server, clients):
    alice, bob = open_as(clients, server, "alice"), open_as(clients, server, "bob")
    for client in (alice, bob):
        assert call(client, "join_room", "general")["success"]
    # seq 1, 2 by alice, 3 by bob, 4 by alice, 5 and 6 by bob.
    for client, content in ((alice, "a1"), (alice, "a2"), (bob, "b1"), (alice, "a3"), (bob, "b2"), (bob, "b3")):
        assert call(client, "send_message", text("general", content))["success"]
    # Direct: two from alice to bob, then one from bob.
    for client, to in ((alice, "bob"), (alice, "bob"), (bob, "alice")):
        assert call(client, "send_message", {"to": user_id(server, to), "content": "psst"})["success"]

    alice_again, bob_again = open_as(clients, server, "alice"), open_as(clients, server, "bob")
    assert alice_again.welcome["unread"] == {"general": 2}  # bob's two after her last; none of hers
    assert alice_again.welcome["unreadDirect"] == {str(user_id(server, "bob")): 1}
    assert bob_again.welcome["unread"] == {} and bob_again.welcome["unreadDirect"] == {}
    assert {room["name"]: room["unread"] for room in get(server, "alice", "/api/rooms")["rooms"]} == {"general": 2}
    assert {room["name"]: room["unread"] for room in get(server, "bob", "/api/rooms")["rooms"]} == {"general": 0}
    assert [(c["with"]["username"], c["unread"]) for c in get(server, "alice", "/api/conversations")[
        "conversations"]] == [("bob", 1)]
    assert [(c["with"]["username"], c["unread"]) for c in get(server, "bob", "/api/conversations")[
        "conversations"]] == [("alice", 0)]
    # A reader who only reads has every message unread; marking read clears it.
    carol = open_as(clients, server, "carol")
    assert call(carol, "join_room", "general")["lastSeq"] == 6
    assert call(carol, "mark_read", {"roomId": "general", "seq": 6})["lastReadSeq"] == 6
    assert open_as(clients, server, "carol").welcome["unread"] == {}


def test_many_senders_at_once_never_count_their_own_messages(live_server, clients):
    url, seeder = live_server.database()
    names = [f"sender{n}" for n in range(8)]
    for name in [*names, "reader"]:
        seeder.user(name)
    server = live_server.start(url, env={"NEXUS_GROUP_COMMIT_MS": "20"})  # wide batches: many senders each
    server.seeder = seeder
    senders = [open_as(clients, server, name) for name in names]
    reader = open_as(clients, server, "reader")
    for client in (*senders, reader):
        assert call(client, "join_room", "busy")["success"]
    acks: dict[str, list[dict]] = {name: [] for name in names}

    def chatter(client: Client) -> None:
        for number in range(10):
            acks[client.name].append(call(client, "send_message", text("busy", f"{client.name} {number}")))

    threads = [threading.Thread(target=chatter, args=(client,)) for client in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(ack["success"] for sent in acks.values() for ack in sent), acks
    assert sorted(ack["message"]["seq"] for sent in acks.values() for ack in sent) == list(range(1, 81))
    for name in names:
        last_own = max(ack["message"]["seq"] for ack in acks[name])
        expected = {"busy": 80 - last_own} if last_own < 80 else {}  # only the others' after one's last
        assert open_as(clients, server, name).welcome["unread"] == expected, name
    assert open_as(clients, server, "reader").welcome["unread"] == {"busy": 80}


def test_join_room_kind_private_makes_a_private_room_or_is_refused(server, clients):
    alice, bob = open_as(clients, server, "alice"), open_as(clients, server, "bob")
    made = call(alice, "join_room", {"room": "plans", "kind": "private"})
    assert made["success"] and made["kind"] == "private"
    room = get(server, "alice", "/api/rooms/plans")["room"]
    assert room["kind"] == "private" and room["ownerId"] == str(user_id(server, "alice"))
    assert "plans" not in {r["name"] for r in get(server, "bob", "/api/rooms")["rooms"]}
    refused = call(bob, "join_room", {"room": "plans", "kind": "private"})
    assert refused["success"] is False and refused["error"]["code"] == "FORBIDDEN"
    sent = call(alice, "send_message", text("plans", "just us"))
    assert sent["success"]
    assert alice.wait_for("room_message")["id"] == sent["messageId"]
    bob.assert_count_stays("room_message", 0)

    # A public room is never joined as a private one (nor the other way round).
    assert call(bob, "join_room", "general")["kind"] == "public"
    conflict = call(alice, "join_room", {"room": "general", "kind": "private"})
    assert conflict["success"] is False and conflict["error"]["code"] == "CONFLICT"
    assert conflict["error"]["details"] == {"kind": "public"}
    assert call(alice, "join_room", {"room": "plans", "kind": "public"})["error"]["code"] == "CONFLICT"
    assert call(alice, "join_room", {"room": "odd", "kind": "secret"})["error"]["code"] == "VALIDATION_ERROR"
    assert {r["name"] for r in get(server, "alice", "/api/rooms")["rooms"]} == {"general", "plans"}


def test_sending_takes_a_socket_in_the_room(server, clients):
    alice, bob = open_as(clients, server, "alice"), open_as(clients, server, "bob")
    assert call(bob, "join_room", "general")["success"]
    refused = call(alice, "send_message", text("general", "drive-by"))
    assert refused == {"success": False, "error": {
        "code": "NOT_IN_ROOM", "message": "Join 'general' (join_room) before sending to it.",
        "details": {"roomId": "general"}}}
    alice.sio.emit("send_message", text("general", "without an ack"))
    assert alice.wait_for("error")["code"] == "NOT_IN_ROOM"
    bob.assert_count_stays("room_message", 0)
    assert get(server, "bob", "/api/rooms/general/messages")["messages"] == []
    assert call(alice, "send_message", text("nowhere", "hello?"))["error"]["code"] == "ROOM_NOT_FOUND"

    # Joined, the sender's own socket gets the message, in order with everyone else's.
    assert call(alice, "join_room", "general")["success"]
    sent = call(alice, "send_message", text("general", "hello"))
    assert sent["success"] and sent["message"]["seq"] == 1
    for client in (alice, bob):
        assert client.wait_for("room_message") == sent["message"]
    # A renewed token keeps the socket in the room; leaving it ends the sending.
    assert call(alice, "authenticate", server.seeder.token("alice"))["success"]
    assert call(alice, "send_message", text("general", "renewed"))["success"]
    assert alice.wait_for("room_message", lambda m: m["content"] == "renewed")
    assert call(alice, "leave_room", "general")["success"]
    assert call(alice, "send_message", text("general", "gone"))["error"]["code"] == "NOT_IN_ROOM"


def test_rate_limit_exceeded_carries_event_retry_and_a_sentence(live_server, clients):
    url, seeder = live_server.database()
    seeder.user("alice")
    server = live_server.start(url, env={"SOCKETIO_RATE_LIMIT_MAX_REQUESTS": "4",
                                         "SOCKETIO_RATE_LIMIT_WINDOW_MS": "60000"})
    alice = clients("alice", server, seeder.token("alice"))
    answers = [call(alice, "ping") for _ in range(6)]
    assert [answer["success"] for answer in answers] == [True] * 4 + [False] * 2
    notice = alice.wait_for("rate_limit_exceeded")
    assert set(notice) == {"event", "retryAfterMs", "message"}
    assert notice["event"] == "ping" and 0 < notice["retryAfterMs"] <= 60_000
    seconds = -(-notice["retryAfterMs"] // 1000)
    assert notice["message"] == f"Too many requests, please slow down: try again in {seconds} s."
    alice.assert_count_stays("rate_limit_exceeded", 1)  # once per window
