"""Message services: what they store, and every event they emit (through the broadcast recorder)."""
from __future__ import annotations

import pytest

from nexus.errors import NexusError
from nexus.models import Message
from nexus.services import messages, rooms
from nexus.services.rooms import Actor


def actor_of(user) -> Actor:
    return Actor(user_id=user.id, role=user.role, username=user.username, display_name=user.display_name)


@pytest.fixture
def people(make_user):
    return {name: actor_of(make_user(name)) for name in ("alice", "bob")}


def join(actor, name="general"):
    return rooms.join(actor, name, auto_create=True, guests_can_chat=False)


def text(content, **extra):
    return {"content": content, "type": "text", **extra}


def test_room_message_is_stored_then_emitted_once_per_namespace(db, broadcasts, people):
    join(people["alice"])
    broadcasts.sent.clear()
    sent = messages.send_to_room(people["alice"], "general", text("hello"))
    stored = db.session.get(Message, int(sent.message["id"]))
    assert stored.content == "hello" and stored.seq == 1
    assert [(e["event"], e["room"], e["namespace"]) for e in broadcasts.sent] == [
        ("room_message", "general", "/"),
        ("room_message", "general", "/chat"),
    ]
    payload = broadcasts.sent[0]["data"]
    assert payload == sent.message
    assert payload["sender"] == {"id": str(people["alice"].user_id), "name": "alice", "username": "alice"}
    assert payload["roomId"] == "general" and payload["to"] is None and payload["type"] == "text"


def test_seq_counts_per_room(db, broadcasts, people):
    join(people["alice"], "one")
    join(people["alice"], "two")
    seqs = [messages.send_to_room(people["alice"], room, text("x")).message["seq"] for room in ("one", "two", "one")]
    assert seqs == [1, 1, 2]


def test_direct_message_goes_to_the_recipient_and_the_senders_other_sockets(db, broadcasts, people):
    alice, bob = people["alice"], people["bob"]
    sent = messages.send_direct(bob, alice.user_id, text("psst"), sender_sid="bob-sid")
    emitted = broadcasts.events("new_message")
    # every socket of the recipient; the sender's other sockets, not the one that sent it
    assert [(e["room"], e["skip_sid"], e["data"]["content"]) for e in emitted] == [
        (f"user_{alice.user_id}", None, "psst"),
        (f"user_{bob.user_id}", "bob-sid", "psst"),
    ]
    assert sent.message["to"] == str(alice.user_id) and sent.message["roomId"] is None


def test_client_msg_id_retry_returns_the_stored_message_without_a_second_event(db, broadcasts, people):
    join(people["alice"])
    broadcasts.sent.clear()
    first = messages.send_to_room(people["alice"], "general", text("once", client_msg_id="c-1"))
    again = messages.send_to_room(people["alice"], "general", text("once", client_msg_id="c-1"))
    assert first.created is True and again.created is False
    assert again.message == first.message
    assert len(broadcasts.events("room_message")) == 1
    assert db.session.query(Message).count() == 1


def test_a_failed_send_emits_nothing(db, broadcasts, people, monkeypatch):
    join(people["alice"])
    broadcasts.sent.clear()

    def broken_commit():
        raise RuntimeError("disk full")

    monkeypatch.setattr(db.session, "commit", broken_commit)
    with pytest.raises(RuntimeError):
        messages.send_to_room(people["alice"], "general", text("lost"))
    monkeypatch.undo()
    db.session.rollback()
    assert broadcasts.sent == []
    assert db.session.query(Message).count() == 0


def test_edit_and_delete_by_the_sender_only(db, broadcasts, people, make_user):
    alice, bob = people["alice"], people["bob"]
    join(alice)
    join(bob)
    sent = messages.send_to_room(alice, "general", text("first draft"))
    broadcasts.sent.clear()
    with pytest.raises(NexusError) as refused:
        messages.edit(bob, int(sent.message["id"]), "hijack")
    assert refused.value.code == "FORBIDDEN"
    edited = messages.edit(alice, int(sent.message["id"]), "final")
    assert edited["content"] == "final" and edited["editedAt"]
    [update] = broadcasts.events("message_updated")
    assert update["room"] == "general" and update["data"] == edited

    admin = actor_of(make_user("root", role="admin"))
    deleted = messages.delete(admin, int(sent.message["id"]))
    [gone] = broadcasts.events("message_deleted")
    assert gone["data"] == deleted and deleted["deleted"] is True and deleted["content"] == ""
    page = messages.history(alice, room_name="general", with_user=None, before=None, after=None,
                            limit=10, order="desc", max_limit=100)
    assert page["messages"] == [deleted]  # a tombstone stays in history


def test_history_is_bounded_and_pages_by_seq(db, broadcasts, people):
    alice = people["alice"]
    join(alice)
    for i in range(7):
        messages.send_to_room(alice, "general", text(f"m{i}"))

    def page(**kwargs):
        args = dict(room_name="general", with_user=None, before=None, after=None, limit=3, order="desc", max_limit=5)
        args.update(kwargs)
        return messages.history(alice, **args)

    assert [m["seq"] for m in page()["messages"]] == [7, 6, 5]
    assert [m["seq"] for m in page(before=5)["messages"]] == [4, 3, 2]
    assert [m["seq"] for m in page(after=2, order="asc")["messages"]] == [3, 4, 5]
    assert [m["seq"] for m in page(after=2, order="desc")["messages"]] == [5, 4, 3]
    assert len(page(limit=1000)["messages"]) == 5  # max_limit wins
    assert page(before=2)["hasMore"] is False


def test_missed_messages_and_the_gap_bound(db, broadcasts, people):
    alice = people["alice"]
    room = join(alice)
    for i in range(6):
        messages.send_to_room(alice, "general", text(f"m{i}"))
    caught = messages.missed(alice, room, 3, bound=10)
    assert caught["complete"] is True and [m["seq"] for m in caught["messages"]] == [4, 5, 6]
    far = messages.missed(alice, room, 0, bound=5)
    assert far == {"complete": False, "reason": "GAP_TOO_LARGE", "since": 0, "lastSeq": 6, "messages": []}


def test_direct_messages_to_unknown_or_banned_users(db, broadcasts, people, make_user):
    with pytest.raises(NexusError) as unknown:
        messages.send_direct(people["alice"], 99999, text("hi"), sender_sid=None)
    assert unknown.value.code == "USER_NOT_FOUND"
    banned = make_user("mallory", role="banned")
    with pytest.raises(NexusError) as refused:
        messages.send_direct(people["alice"], banned.id, text("hi"), sender_sid=None)
    assert refused.value.code == "FORBIDDEN"
    assert broadcasts.sent == []
