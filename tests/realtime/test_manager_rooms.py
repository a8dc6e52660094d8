"""The client manager's index of each socket's rooms: what python-socketio finds by scanning every
room of a namespace (on disconnect, get_rooms) comes from the index, and stays the same after any
sequence of connects, joins, leaves, room closes and disconnects."""
from __future__ import annotations

import random
from types import SimpleNamespace

import socketio
import socketio.packet

from nexus.realtime.queue import LocalManager

NAMESPACES = ("/", "/chat")


def manager() -> LocalManager:
    ids = iter(range(10**9))
    instance = LocalManager()
    instance.set_server(SimpleNamespace(eio=SimpleNamespace(generate_id=lambda: f"s{next(ids)}"),
                                        packet_class=socketio.packet.Packet))
    return instance


def scanned_rooms(instance, sid: str, namespace: str) -> set:
    """python-socketio's own answer: every room of the namespace that holds the socket."""
    return set(socketio.Manager.get_rooms(instance, sid, namespace))


def test_the_index_answers_as_a_scan_of_every_room_after_random_operations():
    rng = random.Random(7)
    instance = manager()
    sockets: list[tuple[str, str]] = []
    rooms = [f"room-{n}" for n in range(12)]
    for step in range(4_000):
        action = rng.random()
        if action < 0.2 or not sockets:
            namespace = rng.choice(NAMESPACES)
            sid = instance.connect(f"e{step}", namespace)
            sockets.append((sid, namespace))
        elif action < 0.6:
            sid, namespace = rng.choice(sockets)
            instance.enter_room(sid, namespace, rng.choice(rooms))
        elif action < 0.8:
            sid, namespace = rng.choice(sockets)
            instance.leave_room(sid, namespace, rng.choice(rooms))
        elif action < 0.83:
            instance.close_room(rng.choice(rooms), rng.choice(NAMESPACES))
        else:
            sid, namespace = sockets.pop(rng.randrange(len(sockets)))
            instance.pre_disconnect(sid, namespace)
            instance.disconnect(sid, namespace)
            assert not instance.is_connected(sid, namespace)
            assert instance.get_rooms(sid, namespace) == []
            assert all(sid not in room for room in instance.rooms.get(namespace, {}).values())
        for sid, namespace in sockets[-3:]:
            assert set(instance.get_rooms(sid, namespace)) == scanned_rooms(instance, sid, namespace)
    for sid, namespace in sockets:
        assert set(instance.get_rooms(sid, namespace)) == scanned_rooms(instance, sid, namespace)
        assert instance.is_connected(sid, namespace)
    for sid, namespace in list(sockets):
        instance.disconnect(sid, namespace)
    assert instance.rooms == {} and not instance._memberships
    assert instance.pending_connect == {} and instance.pending_disconnect == {}


class NoScan(dict):
    """A namespace's rooms that fail the test if anything walks through all of them."""

    def _scanned(self, *_):
        raise AssertionError("every room of the namespace was scanned")

    items = values = keys = copy = __iter__ = _scanned


def test_a_disconnect_and_get_rooms_do_not_scan_every_room():
    """Each socket has rooms of its own, so a scan per disconnect made a reconnect storm quadratic."""
    instance = manager()
    sids = [instance.connect(f"e{n}", "/") for n in range(200)]
    for sid in sids:
        instance.enter_room(sid, "/", "all")
        instance.enter_room(sid, "/", f"user:{sid}")
    instance.rooms["/"] = NoScan(instance.rooms["/"])
    for sid in sids[:-1]:
        assert sorted(instance.get_rooms(sid, "/")) == sorted([sid, "all", f"user:{sid}"])
        instance.pre_disconnect(sid, "/")
        instance.disconnect(sid, "/")
    assert dict.keys(instance.rooms["/"]) == {None, sids[-1], "all", f"user:{sids[-1]}"}
