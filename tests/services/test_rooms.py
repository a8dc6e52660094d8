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


def test_the_unread_summary_is_both_counts_from_one_query(db, make_user):
    from sqlalchemy import event

    alice, bob = actor_of(make_user("alice")), actor_of(make_user("bob"))
    rooms.join(alice, "general", auto_create=True, guests_can_chat=False)
    rooms.join(bob, "general", auto_create=True, guests_can_chat=False)
    messages.send_to_room(alice, "general", {"content": "in the room", "type": "text"})
    for i in range(2):
        messages.send_direct(alice, bob.user_id, {"content": f"dm{i}", "type": "text"}, sender_sid=None)
    statements: list[str] = []
    record = lambda *args: statements.append(args[2])  # noqa: E731 - (conn, cursor, statement, ...)
    event.listen(db.engine, "before_cursor_execute", record)
    try:
        summary = rooms.unread_summary(bob.user_id)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert summary == (rooms.unread_counts(bob.user_id), rooms.direct_unread_counts(bob.user_id))
    assert summary == ({"general": 1}, {str(alice.user_id): 2})
    assert len(statements) == 1
    assert rooms.unread_summary(make_user("carol").id) == ({}, {})


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


# -- revoking access on every instance ------------------------------------------------------------


class FakeQueue:
    """Stands in for the message queue of a control channel: records orders, answers for peers."""

    def __init__(self, control, peers=("b", "c"), answering=("b", "c")):
        self.control = control
        self.orders = []
        self.answering = answering
        control._queued = lambda: True
        control._publish = self.publish
        control.peers = lambda: {*peers, control.instance_id}

    def publish(self, order):
        self.orders.append(order)
        if order["action"] == "revoke":
            for instance in self.answering:  # each peer carries it out and acknowledges
                self.control.handle({"method": "nexus_control", "host_id": f"host-{instance}", "action": "revoke_ack",
                                     "orderId": order["orderId"], "origin": order["origin"], "instance": instance})


def test_a_removal_commits_once_every_live_instance_has_carried_it_out(app, db, make_user):
    owner, bob = actor_of(make_user("owner")), actor_of(make_user("bob"))
    room = rooms.create(owner, "secret", "private", None)
    rooms.add_member(owner, room, bob.user_id)
    queue = FakeQueue(app.extensions["nexus.control"])
    assert rooms.remove_member(owner, room, bob.user_id) == 0
    [order] = [o for o in queue.orders if o["action"] == "revoke"]
    assert (order["userId"], order["room"], order["reason"], order["lastSeq"]) == (bob.user_id, "secret", "removed", 0)
    assert rooms.membership(room, bob.user_id) is None


def test_a_removal_not_confirmed_by_every_instance_is_rolled_back(app, db, make_user, monkeypatch):
    from nexus.realtime import control as control_module

    monkeypatch.setattr(control_module, "REVOKE_WAIT_S", 0.2)
    owner, bob = actor_of(make_user("owner")), actor_of(make_user("bob"))
    room = rooms.create(owner, "secret", "private", None)
    rooms.add_member(owner, room, bob.user_id)
    control = app.extensions["nexus.control"]
    queue = FakeQueue(control, answering=("b",))  # "c" is stalled
    with pytest.raises(NexusError) as refused:
        rooms.remove_member(owner, room, bob.user_id)
    assert refused.value.code == "UNAVAILABLE" and refused.value.retry_after_ms > 0
    assert rooms.membership(room, bob.user_id) is not None  # still a member: nothing half done
    assert [o["action"] for o in queue.orders] == ["revoke", "restore"]
    assert not control.chat.gate.is_revoked("secret", bob.user_id)


def test_a_revocation_order_from_another_instance_is_carried_out_and_acknowledged(
    app, db, make_user, socket_client, token_for
):
    import time

    owner, bob_user = make_user("owner"), make_user("bob")
    bob = actor_of(bob_user)
    room = rooms.create(actor_of(owner), "secret", "private", None)
    rooms.add_member(actor_of(owner), room, bob.user_id)
    bob_socket = socket_client(token=token_for(bob_user))
    assert bob_socket.emit("join_room", "secret", callback=True)["success"]
    bob_socket.get_received()
    control = app.extensions["nexus.control"]
    queue = FakeQueue(control)
    order = {"method": "nexus_control", "host_id": "host-b", "action": "revoke", "orderId": "o1", "origin": "b",
             "expires": time.time() + 5, "userId": bob.user_id, "reason": "removed", "room": "secret",
             "keep": None, "role": None, "lastSeq": 7}
    control.handle(order)
    events = bob_socket.get_received()
    assert [(e["name"], e["args"][0]) for e in events if e["name"] == "removed_from_room"] == [
        ("removed_from_room", {"roomId": "secret", "room": "secret", "reason": "removed", "lastSeq": 7})
    ]
    assert queue.orders == [{"action": "revoke_ack", "orderId": "o1", "origin": "b", "instance": control.instance_id}]
    assert control.chat.gate.is_revoked("secret", bob.user_id)
    assert bob_socket.emit("join_room", "secret", callback=True)["error"]["code"] == "FORBIDDEN"
    # An order that comes too late (its origin gave up on it) is ignored.
    control.handle({**order, "orderId": "o2", "room": "other", "expires": time.time() - 1})
    assert len(queue.orders) == 1 and not control.chat.gate.is_revoked("other", bob.user_id)


def test_a_revocation_refused_while_the_instance_registry_is_unreachable(app, db, make_user):
    owner, bob = actor_of(make_user("owner")), actor_of(make_user("bob"))
    room = rooms.create(owner, "secret", "private", None)
    rooms.add_member(owner, room, bob.user_id)
    control = app.extensions["nexus.control"]
    FakeQueue(control)

    def unreachable():
        raise ConnectionError("redis is down")

    control.peers = unreachable
    with pytest.raises(NexusError) as refused:
        rooms.remove_member(owner, room, bob.user_id)
    assert refused.value.code == "UNAVAILABLE"
    assert rooms.membership(room, bob.user_id) is not None


def test_the_removal_commits_only_after_the_last_acknowledgement(app, db, make_user):
    import threading
    import time

    from sqlalchemy import event

    owner, bob = actor_of(make_user("owner")), actor_of(make_user("bob"))
    room = rooms.create(owner, "secret", "private", None)
    rooms.add_member(owner, room, bob.user_id)
    control = app.extensions["nexus.control"]
    timeline: list[str] = []

    class SlowPeer(FakeQueue):
        """Peer "b" acknowledges 0.3 s after the order went out (a busy listener)."""

        def publish(self, order):
            self.orders.append(order)
            if order["action"] != "revoke":
                return

            def answer():
                time.sleep(0.3)
                timeline.append("acknowledged")
                self.control.handle({"method": "nexus_control", "host_id": "host-b", "action": "revoke_ack",
                                     "orderId": order["orderId"], "origin": order["origin"], "instance": "b"})

            threading.Thread(target=answer, daemon=True).start()

    SlowPeer(control, peers=("b",))

    def committed(session):
        timeline.append("committed")

    event.listen(db.session, "after_commit", committed)
    try:
        rooms.remove_member(owner, room, bob.user_id)
    finally:
        event.remove(db.session, "after_commit", committed)
    assert timeline == ["acknowledged", "committed"]
