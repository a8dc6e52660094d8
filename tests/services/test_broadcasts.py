"""Broadcast services: the event each kind emits (room, payload, namespaces), the record it keeps, and refusals."""
from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select

from nexus.errors import NexusError
from nexus.models import Broadcast, Notification, Room
from nexus.realtime import events
from nexus.services import broadcasts as service
from nexus.services import rooms
from nexus.services.broadcasts import Sender
from nexus.services.rooms import Actor


@pytest.fixture
def root(make_user):
    return make_user("root", role="admin")


@pytest.fixture
def sender(root) -> Sender:
    return Sender.of_user(root)


def served(app, event: str) -> list[str]:
    """The namespaces of this app that deliver an event (each gets one copy)."""
    return sorted(set(events.namespaces_for(event)) & app.extensions["nexus.broadcaster"].namespaces)


def only_emission(app, recorder, event: str) -> dict:
    """The one emission of an event on "/", after checking every other namespace got the same copy."""
    [sent] = recorder.events(event)
    assert sorted(item["namespace"] for item in recorder.sent) == served(app, event)
    for item in recorder.sent:
        assert (item["event"], item["room"], item["data"], item["skip_sid"]) == (
            event, sent["room"], sent["data"], None
        )
    return sent


def records(db) -> list[Broadcast]:
    db.session.rollback()
    return list(db.session.scalars(select(Broadcast).order_by(Broadcast.id)))


def recent(timestamp: str) -> bool:
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return timestamp.endswith("Z") and abs(datetime.now(timezone.utc) - moment) < timedelta(seconds=30)


@contextlib.contextmanager
def failing_commits(db):
    """Every commit fails (as a lost connection would) until the block ends."""

    def refuse(session):
        raise RuntimeError("the database went away")

    sa_event.listen(db.session, "before_commit", refuse)
    try:
        yield
    finally:
        sa_event.remove(db.session, "before_commit", refuse)


# --- Sender -----------------------------------------------------------------------------------


def test_senders_of_users_and_services(root):
    user = Sender.of_user(root)
    assert (user.user_id, user.label) == (root.id, "root")
    assert user.public() == {"id": str(root.id), "name": "root"}
    service = Sender.service("billing")
    assert (service.user_id, service.label) == (None, "service:billing")
    assert service.public() == {"id": None, "name": "service:billing"}
    with pytest.raises(AttributeError):
        service.label = "root"  # frozen


# --- each kind ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "event", "room", "kind", "target", "extra"),
    [
        (lambda s: service.send_system_message(s, "maintenance at 5"), "system_message", "all_users",
         "system", None, {"type": "system"}),
        (lambda s: service.send_admin_message(s, "maintenance at 5"), "admin_message", "admins",
         "admin", None, {"type": "admin"}),
        (lambda s: service.send_department_message(s, "sales", "maintenance at 5"), "department_message",
         "department_sales", "department", "sales", {"type": "department", "department": "sales"}),
    ],
)
def test_each_kind_is_recorded_then_emitted_to_its_room(app, db, broadcasts, sender, root, call, event, room, kind,
                                                         target, extra):
    sent = call(sender)
    emission = only_emission(app, broadcasts, event)
    assert emission["room"] == room
    payload = emission["data"]
    [row] = records(db)
    assert payload == {**extra, "message": "maintenance at 5", "timestamp": payload["timestamp"],
                       "from": {"id": str(root.id), "name": "root"}, "broadcastId": str(row.id)}
    assert recent(payload["timestamp"])
    assert sent == payload  # the sender's answer is what the clients received
    stored = {key: value for key, value in payload.items() if key != "broadcastId"}
    assert (row.kind, row.target, row.event, row.payload) == (kind, target, event, stored)
    assert (row.sender_user_id, row.sender_label, row.instance_id) == (root.id, "root", "test-instance")
    assert row.notification_id is None and row.created_at.tzinfo is not None


def test_room_message_goes_to_a_chat_room_public_or_private(app, db, broadcasts, sender, make_user):
    owner = make_user("owner")
    rooms.create(Actor(user_id=owner.id, role="user", username="owner"), "backstage", "private", None)
    sent = service.send_room_message(sender, "backstage", "  doors open \u0007 ")
    emission = only_emission(app, broadcasts, "system_message")
    assert emission["room"] == "backstage"
    [row] = records(db)
    assert emission["data"] == {"type": "room", "room": "backstage", "message": "doors open",
                                "timestamp": emission["data"]["timestamp"], "from": sender.public(),
                                "broadcastId": str(row.id)}
    assert (row.kind, row.target, row.event) == ("room", "backstage", "system_message")
    assert sent["broadcastId"] == str(row.id)


@pytest.mark.parametrize("name", ["nowhere", "dm:1:2", "all_users", "admins", "user_1"])
def test_room_message_needs_an_existing_chat_room(db, broadcasts, sender, name):
    db.session.add(Room(name="dm:1:2", kind="direct"))
    db.session.commit()
    with pytest.raises(NexusError) as refused:
        service.send_room_message(sender, name, "hello")
    assert refused.value.code == "ROOM_NOT_FOUND"
    assert broadcasts.sent == [] and records(db) == []


def test_a_service_sends_without_an_account(app, db, broadcasts):
    sent = service.send_admin_message(Sender.service("deployer"), "v2 is out")
    assert sent["from"] == {"id": None, "name": "service:deployer"}
    assert only_emission(app, broadcasts, "admin_message")["data"]["from"] == sent["from"]
    [row] = records(db)
    assert (row.sender_user_id, row.sender_label) == (None, "service:deployer")


def test_user_message_is_a_persisted_notification(app, db, broadcasts, sender, make_user):
    alice = make_user("alice")
    sent = service.send_user_message(sender, alice.id, "your export is ready", title="Export", kind="success")
    emission = only_emission(app, broadcasts, "notification")
    assert emission["room"] == f"user_{alice.id}" and emission["data"] == sent
    assert (sent["type"], sent["title"], sent["message"], sent["read"]) == ("success", "Export",
                                                                            "your export is ready", False)
    stored = db.session.get(Notification, int(sent["id"]))
    assert (stored.user_id, stored.title, stored.type) == (alice.id, "Export", "success")
    [row] = records(db)
    assert (row.kind, row.target, row.event, row.notification_id) == ("user", str(alice.id), "notification",
                                                                      stored.id)


@pytest.mark.parametrize(
    ("data", "event", "room"),
    [
        ({"kind": "system", "message": "m"}, "system_message", "all_users"),
        ({"kind": "admin", "message": "m"}, "admin_message", "admins"),
        ({"kind": "department", "department": "ops", "message": "m"}, "department_message", "department_ops"),
        ({"kind": "room", "room": "general", "message": "m"}, "system_message", "general"),
        ({"kind": "user", "user_id": None, "message": "m", "type": "info"}, "notification", None),
    ],
)
def test_send_dispatches_a_loaded_body_by_kind(app, db, broadcasts, sender, make_user, data, event, room):
    alice = make_user("alice")
    rooms.join(Actor(user_id=alice.id, role="user", username="alice"), "general", auto_create=True,
               guests_can_chat=False)
    if data["kind"] == "user":
        data = {**data, "user_id": alice.id}
        room = f"user_{alice.id}"
    sent = service.send(sender, data)
    emission = only_emission(app, broadcasts, event)
    assert emission["room"] == room and emission["data"]["message"] == "m"
    assert records(db)[-1].kind == data["kind"]
    assert sent["from"] == sender.public()
    if data["kind"] == "user":
        assert sent["title"] == "Notification"


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: service.send_system_message(s, ""), "message"),
        (lambda s: service.send_system_message(s, " \n\t "), "message"),
        (lambda s: service.send_system_message(s, "\u0000\u0001"), "message"),
        (lambda s: service.send_system_message(s, "x" * 2001), "message"),
        (lambda s: service.send_system_message(s, None), "message"),
        (lambda s: service.send_admin_message(s, 42), "message"),
        (lambda s: service.send_department_message(s, "../etc", "x"), "department"),
        (lambda s: service.send_department_message(s, "", "x"), "department"),
        (lambda s: service.send_department_message(s, "sales\n", "x"), "department"),
        (lambda s: service.send_department_message(s, "x" * 65, "x"), "department"),
        (lambda s: service.send_department_message(s, None, "x"), "department"),
        (lambda s: service.send_room_message(s, "general", ""), "message"),
        (lambda s: service.send(s, {"kind": "everyone", "message": "x"}), "kind"),
    ],
)
def test_invalid_broadcasts_are_refused_before_anything_is_stored(db, broadcasts, sender, call, field):
    with pytest.raises(NexusError) as refused:
        call(sender)
    assert refused.value.code == "VALIDATION_ERROR"
    assert refused.value.message.startswith(field)
    assert broadcasts.sent == [] and records(db) == []


def test_longest_message_is_accepted_after_trimming(app, db, broadcasts, sender):
    sent = service.send_system_message(sender, "   " + "x" * 2000 + "   ")
    assert len(sent["message"]) == 2000 and len(records(db)) == 1


def test_a_failed_commit_emits_nothing_and_leaves_nothing_queued(app, db, broadcasts, sender):
    with failing_commits(db), pytest.raises(RuntimeError):
        service.send_system_message(sender, "lost")
    assert broadcasts.sent == []
    # The service rolled the session back: the next broadcast commits and sends its own event only.
    service.send_admin_message(sender, "kept")
    assert [item["data"]["message"] for item in broadcasts.sent] == ["kept"] * len(served(app, "admin_message"))
    assert [row.payload["message"] for row in records(db)] == ["kept"]


# --- listing ----------------------------------------------------------------------------------


def test_list_broadcasts_pages_newest_first_by_kind(db, broadcasts, sender):
    for i in range(5):
        service.send_system_message(sender, f"system {i}")
        service.send_admin_message(sender, f"admin {i}")
    first = service.list_broadcasts(kind=None, before=None, limit=4)
    assert [b["payload"]["message"] for b in first["broadcasts"]] == ["admin 4", "system 4", "admin 3", "system 3"]
    assert first["hasMore"] is True
    seen, before = [], None
    while True:
        page = service.list_broadcasts(kind="system", before=before, limit=2)
        seen += [b["payload"]["message"] for b in page["broadcasts"]]
        if not page["hasMore"]:
            break
        before = int(page["broadcasts"][-1]["id"])
    assert seen == [f"system {i}" for i in (4, 3, 2, 1, 0)]
    item = first["broadcasts"][0]
    assert item["sender"] == sender.public() and item["kind"] == "admin" and item["event"] == "admin_message"
    assert item["instanceId"] == "test-instance" and item["target"] is None and recent(item["createdAt"])
    assert service.list_broadcasts(kind="room", before=None, limit=10) == {"broadcasts": [], "hasMore": False}
    with pytest.raises(NexusError) as refused:
        service.list_broadcasts(kind="everyone", before=None, limit=10)
    assert refused.value.code == "VALIDATION_ERROR"
    assert db.session.scalar(select(func.count()).select_from(Broadcast)) == 10
