"""The catch-up gate: live room messages held back during a replay, then screened for late duplicates."""
from __future__ import annotations

from nexus.extensions import socketio
from nexus.realtime import broadcast
from nexus.realtime.gate import RoomGate
from nexus.realtime.queue import LocalManager


def msg(seq: int) -> dict:
    return {"seq": seq, "content": f"m{seq}"}


def test_holds_then_releases_what_the_replay_did_not_cover_in_order_once():
    gate = RoomGate()
    gate.hold("/", "general", "s1")
    for seq in (7, 5, 6, 7, 8):  # out of order, and 7 twice
        assert gate.screen("/", "general", "room_message", msg(seq)) == ["s1"]
    ready, complete = gate.release("/", "general", "s1", replayed_up_to=6)
    assert [m["seq"] for m in ready] == [7, 8] and complete
    # Screened afterwards: a late copy of anything up to 8 is dropped, newer ones pass.
    assert gate.screen("/", "general", "room_message", msg(5)) == ["s1"]
    assert gate.screen("/", "general", "room_message", msg(8)) == ["s1"]
    assert gate.screen("/", "general", "room_message", msg(9)) == []


def test_only_room_messages_of_that_room_and_namespace_are_held():
    gate = RoomGate()
    gate.hold("/", "general", "s1")
    assert gate.screen("/", "general", "user_typing", {"isTyping": True}) == []
    assert gate.screen("/", "random", "room_message", msg(1)) == []
    assert gate.screen("/chat", "general", "room_message", msg(1)) == []
    assert gate.screen("/", "general", "room_message", {"no": "seq"}) == []


def test_release_without_a_replay_returns_everything_held():
    gate = RoomGate()
    gate.hold("/", "general", "s1")
    gate.screen("/", "general", "room_message", msg(40))
    gate.screen("/", "general", "room_message", msg(41))
    ready, complete = gate.release("/", "general", "s1", replayed_up_to=None)
    assert [m["seq"] for m in ready] == [40, 41] and complete


def test_screening_ends_after_its_window_and_on_forget():
    gate = RoomGate(screen_s=0)
    gate.hold("/", "general", "s1")
    gate.release("/", "general", "s1", replayed_up_to=10)
    assert gate.screen("/", "general", "room_message", msg(3)) == []  # the window is over
    assert len(gate) == 0
    gate.hold("/", "general", "s2")
    gate.forget("/", "general", "s2")
    assert len(gate) == 0 and gate.screen("/", "general", "room_message", msg(1)) == []


def test_a_flood_during_the_hold_is_bounded_and_reported():
    gate = RoomGate(max_held=3)
    gate.hold("/", "general", "s1")
    for seq in range(1, 6):
        gate.screen("/", "general", "room_message", msg(seq))
    ready, complete = gate.release("/", "general", "s1", replayed_up_to=0)
    assert [m["seq"] for m in ready] == [1, 2, 3] and complete is False


def test_the_server_fans_out_through_the_gate(app, make_user, token_for, socket_client):
    """The app's client manager consults the gate: a held socket gets nothing until release."""
    assert isinstance(socketio.server.manager, LocalManager)
    gate = app.extensions["nexus.chat"].gate
    alice, bob = make_user("alice"), make_user("bob")
    held, other = socket_client(token=token_for(alice)), socket_client(token=token_for(bob))
    for client in (held, other):
        assert client.emit("join_room", "general", callback=True)["success"]
        client.get_received()
    held_sid = socketio.server.manager.sid_from_eio_sid(held.eio_sid, "/")
    gate.hold("/", "general", held_sid)
    with app.app_context():
        broadcast.emit("room_message", msg(1), room="general")
    assert [p["args"][0] for p in other.get_received() if p["name"] == "room_message"] == [msg(1)]
    assert [p for p in held.get_received() if p["name"] == "room_message"] == []
    assert gate.release("/", "general", held_sid, replayed_up_to=0) == ([msg(1)], True)
