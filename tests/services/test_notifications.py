"""Notification services: what notify stores and emits, validation, listing, and read state."""
from __future__ import annotations

import contextlib
import json

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select

from nexus.errors import NexusError
from nexus.models import Broadcast, Notification
from nexus.realtime import events
from nexus.services import notifications
from nexus.services.broadcasts import Sender


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


def served(app, event: str) -> list[str]:
    return sorted(set(events.namespaces_for(event)) & app.extensions["nexus.broadcaster"].namespaces)


def count(db, model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


@contextlib.contextmanager
def failing_commits(db):
    def refuse(session):
        raise RuntimeError("the database went away")

    sa_event.listen(db.session, "before_commit", refuse)
    try:
        yield
    finally:
        sa_event.remove(db.session, "before_commit", refuse)


def test_notify_stores_records_then_emits_the_wire_form(app, db, broadcasts, alice, make_user):
    root = make_user("root", role="admin")
    sender = Sender.of_user(root)
    wire = notifications.notify(alice.id, "  Export  ", "Your export is ready", type="success",
                                data={"url": "/exports/7", "size": 3}, sender=sender)
    stored = db.session.get(Notification, int(wire["id"]))
    assert wire == {
        "id": str(stored.id),
        "type": "success",
        "title": "Export",
        "message": "Your export is ready",
        "data": {"url": "/exports/7", "size": 3},
        "timestamp": wire["createdAt"],
        "createdAt": wire["createdAt"],
        "read": False,
        "readAt": None,
        "from": {"id": str(root.id), "name": "root"},
    }
    assert wire["createdAt"].endswith("Z") and stored.read_at is None and stored.user_id == alice.id
    [sent] = broadcasts.events("notification")
    assert (sent["room"], sent["data"], sent["skip_sid"]) == (f"user_{alice.id}", wire, None)
    assert sorted(item["namespace"] for item in broadcasts.sent) == served(app, "notification")
    assert all(item["data"] == wire and item["room"] == f"user_{alice.id}" for item in broadcasts.sent)
    [row] = db.session.scalars(select(Broadcast))
    assert (row.kind, row.target, row.event, row.notification_id) == ("user", str(alice.id), "notification", stored.id)
    assert (row.sender_user_id, row.sender_label, row.payload) == (root.id, "root", wire)


def test_without_a_sender_the_system_sends_it(db, broadcasts, alice):
    wire = notifications.notify(alice.id, "Hi", "Welcome")
    assert wire["from"] == {"id": None, "name": "system"}
    assert wire["type"] == "info" and wire["data"] == {}
    assert db.session.scalar(select(Broadcast.sender_label)) == "system"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": None}, "title"),
        ({"message": ""}, "message"),
        ({"message": "\n\u0000"}, "message"),
        ({"message": "x" * 2001}, "message"),
        ({"type": "urgent"}, "type"),
        ({"data": ["not", "an", "object"]}, "data"),
        ({"data": "text"}, "data"),
        ({"data": {"blob": "x" * 4096}}, "data"),
        ({"data": {"ratio": float("nan")}}, "data"),
        ({"data": {"when": object()}}, "data"),
    ],
)
def test_invalid_notifications_store_and_send_nothing(db, broadcasts, alice, kwargs, field):
    args = {"title": "Hello", "message": "there"} | kwargs
    extra = {key: value for key, value in args.items() if key in ("type", "data")}
    with pytest.raises(NexusError) as refused:
        notifications.notify(alice.id, args["title"], args["message"], **extra)
    assert refused.value.code == "VALIDATION_ERROR" and field in refused.value.details
    assert broadcasts.sent == [] and count(db, Notification) == 0 and count(db, Broadcast) == 0


def test_data_is_bounded_by_its_json_size_in_bytes(db, broadcasts, alice):
    overhead = len(json.dumps({"k": ""}, separators=(",", ":")))
    fits = {"k": "x" * (4096 - overhead)}
    assert notifications.notify(alice.id, "t", "m", data=fits)["data"] == fits
    with pytest.raises(NexusError) as refused:
        notifications.notify(alice.id, "t", "m", data={"k": "x" * (4097 - overhead)})
    assert "4096 bytes" in refused.value.message
    with pytest.raises(NexusError):  # two bytes per character in UTF-8
        notifications.notify(alice.id, "t", "m", data={"k": "\u00e9" * (2049 - overhead // 2)})
    assert count(db, Notification) == 1


@pytest.mark.parametrize("user_id", [99_999, 0, -1, 2**63])
def test_unknown_users_get_nothing(db, broadcasts, user_id):
    with pytest.raises(NexusError) as refused:
        notifications.notify(user_id, "t", "m")
    assert refused.value.code == "USER_NOT_FOUND"
    assert broadcasts.sent == [] and count(db, Notification) == 0


def test_a_failed_commit_emits_nothing(db, broadcasts, alice):
    with failing_commits(db), pytest.raises(RuntimeError):
        notifications.notify(alice.id, "Lost", "never delivered")
    assert broadcasts.sent == []
    kept = notifications.notify(alice.id, "Kept", "delivered")
    assert [item["data"]["title"] for item in broadcasts.events("notification")] == ["Kept"]
    db.session.rollback()
    assert [n.title for n in db.session.scalars(select(Notification))] == ["Kept"]
    assert notifications.unread(alice.id) == [kept]


def test_unread_is_oldest_first_and_keeps_the_sender(db, broadcasts, alice, bob):
    first = notifications.notify(alice.id, "one", "m", sender=Sender.service("billing"))
    second = notifications.notify(alice.id, "two", "m")
    third = notifications.notify(alice.id, "three", "m", sender=Sender.of_user(bob))
    notifications.notify(bob.id, "for bob", "m")
    notifications.mark_read(alice.id, int(second["id"]))
    assert notifications.unread(alice.id) == [first, third]
    assert notifications.unread(alice.id, limit=1) == [first]
    assert notifications.unread(alice.id)[0]["from"] == {"id": None, "name": "service:billing"}


def test_pages_are_newest_first_without_duplicates(db, broadcasts, alice, bob):
    sent = [notifications.notify(alice.id, f"n{i}", "m") for i in range(7)]
    notifications.notify(bob.id, "not alice's", "m")
    for i in (1, 4):
        notifications.mark_read(alice.id, int(sent[i]["id"]))
    seen, before, pages = [], None, 0
    while True:
        page = notifications.list_page(alice.id, unread_only=False, before=before, limit=3)
        assert page["unreadCount"] == 5 + pages
        pages += 1
        seen += [n["title"] for n in page["notifications"]]
        # A notification arriving meanwhile does not shift the pages after it.
        notifications.notify(alice.id, f"late{pages}", "m")
        if not page["hasMore"]:
            break
        before = int(page["notifications"][-1]["id"])
    assert seen == ["n6", "n5", "n4", "n3", "n2", "n1", "n0"] and pages == 3
    unread = notifications.list_page(alice.id, unread_only=True, before=int(sent[6]["id"]), limit=10)
    assert [n["title"] for n in unread["notifications"]] == ["n5", "n3", "n2", "n0"]
    assert unread["hasMore"] is False and all(not n["read"] for n in unread["notifications"])


def test_mark_read_is_for_the_owner_only_and_idempotent(db, broadcasts, alice, bob):
    wire = notifications.notify(alice.id, "t", "m")
    broadcasts.sent.clear()
    for user_id, notification_id in ((bob.id, int(wire["id"])), (alice.id, 99_999), (alice.id, 0), (alice.id, 2**63)):
        with pytest.raises(NexusError) as refused:
            notifications.mark_read(user_id, notification_id)
        assert refused.value.code == "NOT_FOUND"
    read = notifications.mark_read(alice.id, int(wire["id"]))
    assert read == {**wire, "read": True, "readAt": read["readAt"]} and read["readAt"].endswith("Z")
    assert notifications.mark_read(alice.id, int(wire["id"])) == read
    assert notifications.unread_count(alice.id) == 0 and broadcasts.sent == []


def test_mark_all_read_counts_and_touches_only_the_user(db, broadcasts, alice, bob):
    for i in range(3):
        notifications.notify(alice.id, f"a{i}", "m")
    notifications.notify(bob.id, "b", "m")
    notifications.mark_read(alice.id, int(notifications.unread(alice.id)[0]["id"]))
    assert notifications.mark_all_read(alice.id) == 2
    assert notifications.mark_all_read(alice.id) == 0
    assert notifications.unread(alice.id) == [] and notifications.unread_count(bob.id) == 1
    db.session.expire_all()
    mine = db.session.scalars(select(Notification).where(Notification.user_id == alice.id)).all()
    assert len(mine) == 3 and all(n.read_at is not None for n in mine)
