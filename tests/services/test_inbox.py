"""What users have waiting when they connect, read for many at once with two statements."""
from __future__ import annotations

from sqlalchemy import event, select, update

from nexus.models import Room, RoomMembership
from nexus.services import inbox, notifications, rooms
from nexus.services.rooms import Actor


def actor_of(user) -> Actor:
    return Actor(user_id=user.id, role=user.role, username=user.username, display_name=user.display_name)


def unread_up_to(db, room_name: str, last_seq: int, read: dict[int, int]) -> None:
    """A room whose last seq is `last_seq`, with the members' read markers (seq counters only)."""
    room = db.session.scalar(select(Room).where(Room.name == room_name))
    db.session.execute(update(Room).where(Room.id == room.id).values(last_seq=last_seq))
    for user_id, seq in read.items():
        db.session.execute(update(RoomMembership).where(RoomMembership.room_id == room.id,
                                                        RoomMembership.user_id == user_id).values(last_read_seq=seq))
    db.session.commit()


def test_the_inboxes_of_many_users_come_from_two_statements_and_match_each_users_own(db, make_user, monkeypatch):
    alice, bob, carol, dave = (make_user(name) for name in ("alice", "bob", "carol", "dave"))
    for user in (alice, bob, carol):
        rooms.join(actor_of(user), "general", auto_create=True, guests_can_chat=False)
    rooms.join(actor_of(bob), "random", auto_create=True, guests_can_chat=False)
    unread_up_to(db, "general", 10, {alice.id: 10, bob.id: 4, carol.id: 0})
    unread_up_to(db, "random", 3, {bob.id: 1})
    dm = rooms._create(f"dm:{min(alice.id, carol.id)}:{max(alice.id, carol.id)}", "direct", owner_id=None, topic=None)
    rooms._add_membership(dm, alice.id, "member")
    rooms._add_membership(dm, carol.id, "member")
    db.session.commit()
    unread_up_to(db, dm.name, 2, {alice.id: 0, carol.id: 2})
    for n in range(4):
        notifications.notify(carol.id, f"for carol {n}", "hello")
    notifications.notify(bob.id, "for bob", "hello")
    notifications.mark_read(carol.id, int(notifications.unread(carol.id)[0]["id"]))
    monkeypatch.setattr(inbox, "MAX_REDELIVERED", 2)

    ids = [alice.id, bob.id, carol.id, dave.id, bob.id]
    statements: list[str] = []
    record = lambda *args: statements.append(args[2])  # noqa: E731 - (conn, cursor, statement, ...)
    event.listen(db.engine, "before_cursor_execute", record)
    try:
        read = inbox.read_inboxes(ids)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert len(statements) == 2

    alice_in, bob_in, carol_in, dave_in, bob_again = read
    assert (alice_in.unread, alice_in.unread_direct, alice_in.notifications) == ({}, {str(carol.id): 2}, [])
    assert (bob_in.unread, bob_in.unread_direct) == ({"general": 6, "random": 2}, {})
    assert [n["title"] for n in bob_in.notifications] == ["for bob"] and bob_again == bob_in
    assert (carol_in.unread, carol_in.unread_direct) == ({"general": 10}, {})
    # The oldest unread first, at most MAX_REDELIVERED of them, as notifications.unread gives them.
    assert carol_in.notifications == notifications.unread(carol.id, limit=2)
    assert [n["title"] for n in carol_in.notifications] == ["for carol 1", "for carol 2"]
    assert dave_in == inbox.Inbox()
    for user, got in ((alice, alice_in), (bob, bob_in), (carol, carol_in)):
        assert (got.unread, got.unread_direct) == rooms.unread_summary(user.id)


def test_the_reader_of_an_app_is_one(app, db):
    assert inbox.reader(app) is inbox.reader(app)
    assert inbox.reader(app).read(12345) == inbox.Inbox()
