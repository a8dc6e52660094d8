"""Room services: joining rules, live membership events, information, unread counts."""
from __future__ import annotations

import pytest

from nexus.errors import NexusError
from nexus.services import messages, rooms
from nexus.services.rooms import Actor, LiveMembership
from nexus.stores.live_rooms import LiveRooms
from nexus.stores.memory import MemoryTally


def actor_of(user) -> Actor:
    return Actor(user_id=user.id, role=user.role, username=user.username, display_name=user.display_name)


GUEST = Actor(user_id=None, guest_key="sid-guest")


@pytest.mark.parametrize("name", ["user_1", "department_sales", "admins", "moderators", "all_users", "dm:1:2", "DM-x"])
def test_managed_names_cannot_be_joined(db, make_user, name):
    with pytest.raises(NexusError) as refused:
        rooms.join(actor_of(make_user()), name, auto_create=True, guests_can_chat=True)
    assert refused.value.code == "FORBIDDEN"


def test_public_rooms_are_created_on_first_join_unless_disabled(db, make_user):
    alice = actor_of(make_user("alice"))
    with pytest.raises(NexusError) as missing:
        rooms.join(alice, "lobby", auto_create=False, guests_can_chat=False)
    assert missing.value.code == "ROOM_NOT_FOUND"
    room = rooms.join(alice, "lobby", auto_create=True, guests_can_chat=False)
    assert (room.kind, room.owner_id) == ("public", alice.user_id)


def test_guests_join_public_rooms_only_when_allowed(db, make_user):
    rooms.join(actor_of(make_user("alice")), "lobby", auto_create=True, guests_can_chat=False)
    with pytest.raises(NexusError) as refused:
        rooms.join(GUEST, "lobby", auto_create=True, guests_can_chat=False)
    assert refused.value.code == "FORBIDDEN"
    assert rooms.join(GUEST, "lobby", auto_create=True, guests_can_chat=True).name == "lobby"
    with pytest.raises(NexusError):
        rooms.join(GUEST, "new-room", auto_create=True, guests_can_chat=True)  # guests create nothing


def test_private_rooms_need_membership_given_by_owner_or_admin(db, make_user):
    owner = actor_of(make_user("owner"))
    bob = actor_of(make_user("bob"))
    carol = actor_of(make_user("carol"))
    admin = actor_of(make_user("root", role="admin"))
    room = rooms.create(owner, "secret", "private", None)
    with pytest.raises(NexusError) as refused:
        rooms.join(bob, "secret", auto_create=True, guests_can_chat=False)
    assert refused.value.code == "FORBIDDEN"
    with pytest.raises(NexusError) as not_owner:
        rooms.add_member(carol, room, bob.user_id)
    assert not_owner.value.code == "FORBIDDEN"
    rooms.add_member(owner, room, bob.user_id)
    assert rooms.join(bob, "secret", auto_create=True, guests_can_chat=False).id == room.id
    rooms.add_member(admin, room, carol.user_id)
    rooms.remove_member(owner, room, carol.user_id)
    with pytest.raises(NexusError):
        rooms.join(carol, "secret", auto_create=True, guests_can_chat=False)
    assert rooms.join(admin, "secret", auto_create=True, guests_can_chat=False).id == room.id


def test_live_membership_counts_users_once_and_announces_first_and_last(app, broadcasts, make_user):
    live = LiveMembership(LiveRooms(MemoryTally()))
    alice, bob = actor_of(make_user("alice")), actor_of(make_user("bob"))
    with app.app_context():
        assert live.entered(alice, "general", "a1") == 1
        assert live.entered(alice, "general", "a2") == 1  # second socket: same member
        assert live.entered(bob, "general", "b1") == 2
        assert live.left(alice, "general", "a1") == 2  # alice still has a2
        assert live.left(alice, "general", "a2") == 1
    assert [(e["event"], e["data"]["user"]["username"], e["data"]["memberCount"]) for e in broadcasts.events("room_joined")] == [
        ("room_joined", "alice", 1),
        ("room_joined", "bob", 2),
    ]
    assert {e["skip_sid"] for e in broadcasts.events("room_joined")} == {"a1", "b1"}  # never to the newcomer
    [left] = broadcasts.events("room_left")
    assert left["room"] == "general" and left["data"]["user"]["username"] == "alice" and left["data"]["memberCount"] == 1
    assert live.members("general") == {f"u:{bob.user_id}"}
    with app.app_context():
        live.left(bob, "general", "b1")
    assert live.store.tally.scopes() == 0  # empty rooms are dropped


def test_unread_counts_follow_the_read_marker(db, make_user):
    alice, bob = actor_of(make_user("alice")), actor_of(make_user("bob"))
    room = rooms.join(alice, "general", auto_create=True, guests_can_chat=False)
    rooms.join(bob, "general", auto_create=True, guests_can_chat=False)
    for i in range(4):
        messages.send_to_room(alice, "general", {"content": f"m{i}", "type": "text"})
    assert rooms.unread_counts(bob.user_id) == {"general": 4}
    assert rooms.mark_read(bob, room, 3) == 3
    assert rooms.unread_counts(bob.user_id) == {"general": 1}
    assert rooms.mark_read(bob, room, 1) == 3  # never backwards
    assert rooms.mark_read(bob, room, 999) == 4  # never past the end
    assert rooms.unread_counts(bob.user_id) == {}


def test_room_info_lists_members_and_refuses_outsiders(db, make_user):
    owner = actor_of(make_user("owner"))
    outsider = actor_of(make_user("outsider"))
    room = rooms.create(owner, "secret", "private", "plans")
    live = LiveMembership(LiveRooms(MemoryTally()))
    info = rooms.info(owner, room, live)
    assert info["name"] == "secret" and info["kind"] == "private" and info["topic"] == "plans"
    assert [(m["username"], m["memberRole"], m["status"]) for m in info["members"]] == [("owner", "owner", "offline")]
    assert info["memberCount"] == 1 and info["createdAt"].endswith("Z")
    with pytest.raises(NexusError) as refused:
        rooms.info(outsider, room, live)
    assert refused.value.code == "FORBIDDEN"
