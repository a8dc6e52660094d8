"""Read markers and sending: a sender's marker moves to their message in the transaction that stores it, so
unread counts (the room's last seq less the marker) never include what one sent; with group commit, in
batches of many senders and rooms at once, and never back whatever a mark_read writes."""
from __future__ import annotations

import gevent
import pytest
from sqlalchemy import select

from nexus.extensions import db as _db
from nexus.models import Message, Room, RoomMembership
from nexus.realtime import broadcast
from nexus.services import inbox, messages, rooms
from nexus.services.rooms import Actor
from nexus.services.users import create_user
from tests.conftest import BroadcastRecorder

ROOMS = ("alpha", "beta")


def actor_of(user) -> Actor:
    return Actor(user_id=user.id, role=user.role, username=user.username, display_name=user.display_name)


@pytest.fixture(params=[2, 0], ids=["group-commit", "one-transaction-each"])
def green_app(request, app_factory):
    app = app_factory(async_mode="gevent", group_commit_ms=request.param)
    namespaces = app.extensions["nexus.broadcaster"].namespaces
    app.extensions["nexus.broadcaster"] = broadcast.Broadcaster(BroadcastRecorder(), namespaces)
    return app


@pytest.fixture
def people(green_app) -> list[Actor]:
    with green_app.app_context():
        made = [actor_of(create_user(f"person{n}", "correct-horse-1")) for n in range(8)]
        for name in ROOMS:
            for person in made:
                rooms.join(person, name, auto_create=True, guests_can_chat=False)
        _db.session.commit()
    return made


def send_together(app, jobs: list[tuple[Actor, str]]) -> None:
    """Every (sender, room) sends at once, each from a greenlet (one batch or a few)."""
    def send(number: int, actor: Actor, room: str) -> None:
        with app.app_context():
            messages.send_to_room(actor, room, {"content": f"m{number}", "type": "text"})

    greenlets = [gevent.spawn(send, number, *job) for number, job in enumerate(jobs)]
    gevent.joinall(greenlets, timeout=60, raise_error=True)


def test_unread_counts_are_exactly_the_others_messages_after_ones_last(green_app, people):
    jobs = [(people[(n * 5) % 7], ROOMS[n % 2]) for n in range(120)]  # person7 only reads
    send_together(green_app, jobs)
    with green_app.app_context():
        stored = _db.session.execute(select(Room.name, Message.seq, Message.sender_id)
                                     .join(Room, Room.id == Message.room_id)).all()
        markers = {(name, user_id): seq for name, user_id, seq in _db.session.execute(
            select(Room.name, RoomMembership.user_id, RoomMembership.last_read_seq)
            .join(Room, Room.id == RoomMembership.room_id))}
        for person in people:
            expected = {}
            for name in ROOMS:
                own = [seq for room, seq, sender in stored if room == name and sender == person.user_id]
                # The marker is the sender's last message; after it, only others' messages are unread.
                assert markers[(name, person.user_id)] == max(own, default=0), (person.username, name)
                unread = [seq for room, seq, sender in stored if room == name and seq > max(own, default=0)]
                if unread:
                    expected[name] = len(unread)
            assert rooms.unread_counts(person.user_id) == expected, person.username
            assert inbox.read_inboxes([person.user_id])[0].unread == expected
        assert rooms.unread_counts(people[7].user_id) == {"alpha": 60, "beta": 60}


def test_a_mark_read_never_moves_a_marker_back_past_ones_own_message(green_app, people):
    alice, bob = people[0], people[1]
    with green_app.app_context():
        for sender in (bob, bob, alice):
            messages.send_to_room(sender, "alpha", {"content": "hi", "type": "text"})
        room = rooms.find_room("alpha")
        assert rooms.mark_read(alice, room, 1) == 3  # an old marker from a slow client: kept at 3
        messages.send_to_room(bob, "alpha", {"content": "and?", "type": "text"})
        assert rooms.unread_counts(alice.user_id)["alpha"] == 1
        assert rooms.mark_read(alice, rooms.find_room("alpha"), 99) == 4  # never past the last message
        assert "alpha" not in rooms.unread_counts(alice.user_id)


def test_advance_read_markers_moves_only_the_given_memberships_forward(green_app, people):
    alice, bob, carol = people[0], people[1], people[2]
    with green_app.app_context():
        alpha, beta = rooms.find_room("alpha").id, rooms.find_room("beta").id
        rooms.advance_read_markers({(alpha, alice.user_id): 5, (beta, bob.user_id): 3})
        rooms.advance_read_markers({(alpha, alice.user_id): 2, (alpha, 10_000): 7})  # back: no; no member: nothing
        _db.session.commit()
        markers = {(room_id, user_id): seq for room_id, user_id, seq in _db.session.execute(
            select(RoomMembership.room_id, RoomMembership.user_id, RoomMembership.last_read_seq)
            .where(RoomMembership.user_id.in_([alice.user_id, bob.user_id, carol.user_id])))}
        assert markers == {
            (alpha, alice.user_id): 5, (beta, alice.user_id): 0,
            (alpha, bob.user_id): 0, (beta, bob.user_id): 3,
            (alpha, carol.user_id): 0, (beta, carol.user_id): 0,
        }
