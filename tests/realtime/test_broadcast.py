"""The broadcast facade: namespaces per event, emit after commit, nothing on rollback."""
from __future__ import annotations

from nexus.models import Room
from nexus.realtime import broadcast, events


def test_emit_reaches_each_registered_namespace_that_serves_the_event(app, broadcasts):
    with app.app_context():
        broadcast.emit(events.SYSTEM_MESSAGE, {"message": "hi"}, room=events.ALL_USERS_ROOM)
    assert [(item["event"], item["room"], item["namespace"]) for item in broadcasts.sent] == [
        ("system_message", "all_users", "/"),
        ("system_message", "all_users", "/chat"),
        ("system_message", "all_users", "/presence"),
        ("system_message", "all_users", "/admin"),
    ]


def test_broadcaster_fans_out_over_namespaces(broadcasts):
    facade = broadcast.Broadcaster(broadcasts, ["/", "/chat", "/admin"])
    facade.emit(events.ROOM_MESSAGE, {"id": 1}, room="general")
    facade.emit(events.ADMIN_MESSAGE, {"m": 1}, room="admins")
    assert [(item["event"], item["namespace"]) for item in broadcasts.sent] == [
        ("room_message", "/"),
        ("room_message", "/chat"),
        ("admin_message", "/"),
        ("admin_message", "/admin"),
    ]


def test_events_wait_for_the_commit(db, broadcasts):
    db.session.add(Room(name="general"))
    broadcast.emit_after_commit(db.session, events.ROOM_MESSAGE, {"id": 1}, room="general")
    assert broadcasts.sent == []
    db.session.commit()
    assert [item["event"] for item in broadcasts.sent] == ["room_message", "room_message"]  # / and /chat


def test_events_of_a_rolled_back_transaction_are_dropped(db, broadcasts):
    db.session.add(Room(name="general"))
    broadcast.emit_after_commit(db.session, events.ROOM_MESSAGE, {"id": 1}, room="general")
    db.session.rollback()
    db.session.commit()
    assert broadcasts.sent == []


def test_a_failing_transport_does_not_undo_the_commit(db, app, caplog):
    class Broken:
        def emit(self, *args, **kwargs):
            raise ConnectionError("queue down")

    app.extensions["nexus.broadcaster"] = broadcast.Broadcaster(Broken(), ["/"])
    db.session.add(Room(name="kept"))
    broadcast.emit_after_commit(db.session, events.ROOM_MESSAGE, {"id": 1}, room="kept")
    db.session.commit()
    assert db.session.query(Room).filter_by(name="kept").count() == 1
    assert "could not deliver room_message" in caplog.text


def test_reply_stays_local(app, broadcasts):
    with app.app_context():
        broadcast.reply(events.PONG, {"timestamp": 1}, sid="abc", namespace="/")
    assert broadcasts.sent == [
        {"event": "pong", "data": {"timestamp": 1}, "room": "abc", "namespace": "/", "skip_sid": None, "local": True}
    ]


def test_managed_rooms_are_reserved():
    assert events.is_reserved_room("user_12")
    assert events.is_reserved_room("department_sales")
    assert events.is_reserved_room("admins") and events.is_reserved_room("all_users")
    assert not events.is_reserved_room("general")
