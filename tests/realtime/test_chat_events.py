"""Chat events through Flask-SocketIO's test client, on `/` and on the class-based `/chat`."""
from __future__ import annotations

import pytest


@pytest.fixture
def pair(make_user, token_for, socket_client):
    alice, bob = make_user("alice"), make_user("bob")
    return (
        alice,
        bob,
        socket_client(token=token_for(alice)),
        socket_client(token=token_for(bob), namespace="/chat"),
    )


def received(test_client, name, namespace="/"):
    return [item["args"][0] for item in test_client.get_received(namespace) if item["name"] == name]


def test_a_message_sent_on_the_default_namespace_reaches_chat_namespace_clients(pair):
    alice, bob, on_default, on_chat = pair
    assert on_default.emit("join_room", "general", callback=True)["success"]
    assert on_chat.emit("join_room", {"room": "general"}, callback=True, namespace="/chat")["memberCount"] == 2
    ack = on_default.emit("send_message", {"roomId": "general", "content": "hi", "type": "text"}, callback=True)
    assert received(on_chat, "room_message", "/chat") == [ack["message"]]
    reply = on_chat.emit(
        "send_message", {"roomId": "general", "content": "hello", "type": "text"}, callback=True, namespace="/chat"
    )
    assert [m["content"] for m in received(on_default, "room_message")] == ["hi", "hello"]
    assert reply["message"]["seq"] == 2


def test_unread_counts_in_the_welcome(app, make_user, token_for, socket_client):
    alice, bob = make_user("alice"), make_user("bob")
    sender = socket_client(token=token_for(alice))
    reader = socket_client(token=token_for(bob))
    reader.emit("join_room", "general", callback=True)
    sender.emit("join_room", "general", callback=True)
    for i in range(3):
        sender.emit("send_message", {"roomId": "general", "content": f"m{i}"}, callback=True)
    reader.emit("mark_read", {"roomId": "general", "seq": 1}, callback=True)
    again = socket_client(token=token_for(bob))
    assert received(again, "connected")[0]["unread"] == {"general": 2}


def test_disconnect_leaves_every_room_with_room_left(pair, app):
    alice, bob, on_default, on_chat = pair
    on_default.emit("join_room", "one", callback=True)
    on_default.emit("join_room", "two", callback=True)
    on_chat.emit("join_room", "one", callback=True, namespace="/chat")
    on_chat.get_received("/chat")
    on_default.disconnect()
    left = received(on_chat, "room_left", "/chat")
    assert [(e["roomId"], e["user"]["username"], e["memberCount"]) for e in left] == [("one", "alice", 1)]
    live = app.extensions["nexus.chat"].live
    assert live.members("two") == set() and live.members("one") == {f"u:{bob.id}"}


def test_typing_needs_the_room(pair):
    alice, bob, on_default, on_chat = pair
    assert on_chat.emit("join_room", "general", callback=True, namespace="/chat")["success"]  # bob: it exists
    refused = on_default.emit("typing_start", "general", callback=True)["error"]
    assert refused["code"] == "NOT_IN_ROOM" and refused["details"] == {"roomId": "general"}
    on_default.emit("typing_start", "general")  # no ack asked: an error event instead
    assert received(on_default, "error")[-1]["code"] == "NOT_IN_ROOM"
    # Typing asks no database why: joining tells (ROOM_NOT_FOUND here).
    assert on_default.emit("typing_stop", {"roomId": "nowhere"}, callback=True)["error"]["code"] == "NOT_IN_ROOM"


def test_leaving_a_room_you_are_not_in(pair):
    alice, bob, on_default, on_chat = pair
    assert on_default.emit("leave_room", "general", callback=True)["error"]["code"] == "NOT_FOUND"


def test_direct_conversations_have_read_markers_and_unread_counts(app, client, make_user, token_for, socket_client):
    alice, bob = make_user("alice"), make_user("bob")
    sender = socket_client(token=token_for(alice))
    for i in range(3):
        assert sender.emit("send_message", {"to": bob.id, "content": f"dm{i}"}, callback=True)["success"]
    reader = socket_client(token=token_for(bob))
    welcome = received(reader, "connected")[0]
    assert welcome["unreadDirect"] == {str(alice.id): 3} and welcome["unread"] == {}
    ack = reader.emit("mark_read", {"with": alice.id, "seq": 2}, callback=True)
    assert ack == {"success": True, "with": str(alice.id), "lastReadSeq": 2}
    listed = client.get("/api/conversations", headers={"Authorization": f"Bearer {token_for(bob)}"}).get_json()
    [conversation] = listed["conversations"]
    assert conversation["with"]["username"] == "alice" and conversation["unread"] == 1
    assert conversation["lastSeq"] == 3 and conversation["lastReadSeq"] == 2
    # No conversation yet, both targets, or neither: refused with a code.
    carol = make_user("carol")
    assert reader.emit("mark_read", {"with": carol.id, "seq": 1}, callback=True)["error"]["code"] == "NOT_FOUND"
    both = reader.emit("mark_read", {"with": alice.id, "roomId": "general", "seq": 1}, callback=True)
    assert both["error"]["code"] == "VALIDATION_ERROR"
    assert reader.emit("mark_read", {"seq": 1}, callback=True)["error"]["code"] == "VALIDATION_ERROR"
    guest = socket_client()
    assert guest.emit("mark_read", {"with": alice.id, "seq": 1}, callback=True)["error"]["code"] == "FORBIDDEN"


def test_emoji_sequences_and_new_emoji_arrive_as_sent_and_control_characters_do_not(pair):
    alice, bob, on_default, on_chat = pair
    assert on_default.emit("join_room", "general", callback=True)["success"]
    sent = "family \U0001F468\u200d\U0001F469\u200d\U0001F467, flag \U0001F3F3\ufe0f\u200d\U0001F308, " \
           "shaking \U0001FAE8, \u0627\u200f"  # a ZWJ sequence, an emoji newer than Unicode 14, an RLM
    ack = on_default.emit("send_message", {"roomId": "general", "content": sent + "\x07\u202e\ufeff"}, callback=True)
    assert ack["success"] and ack["message"]["content"] == sent
    [stored] = on_default.emit("get_history", {"roomId": "general"}, callback=True)["messages"]
    assert stored["content"] == sent
