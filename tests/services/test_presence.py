"""Presence: online/offline announcements, chosen statuses, away after inactivity, last seen, upkeep."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterator
from uuid import uuid4

import pytest
from sqlalchemy import select

from nexus.errors import NexusError
from nexus.extensions import db as nexus_db
from nexus.models import User, isoformat
from nexus.realtime.keeper import Keeper
from nexus.services.presence import Presence
from nexus.services.rooms import Actor
from nexus.stores.memory import MemoryPresenceStore, MemoryTally
from nexus.stores.redis import RedisPresenceStore, RedisTally, connect
from tests.conftest import BroadcastRecorder
from tests.support import services

T0 = 1_700_000_000.0
GUEST = Actor(user_id=None, guest_key="sid-guest")


def actor_of(user) -> Actor:
    return Actor(user_id=user.id, role=user.role, username=user.username, display_name=user.display_name)


def at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def iso(epoch: float) -> str:
    return isoformat(at(epoch))


def stored(db, user_id: int) -> tuple[str, datetime | None]:
    """The committed status and last seen of a user, read on a connection of its own."""
    with db.engine.connect() as connection:
        row = connection.execute(select(User.status, User.last_seen_at).where(User.id == user_id)).one()
    return row.status, row.last_seen_at


def emitted(broadcasts, name: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    """(room, skip_sid, payload) of each `name` event; the /presence namespace gets the same ones."""
    on_default = [(e["room"], e["skip_sid"], e["data"]) for e in broadcasts.events(name)]
    assert on_default == [(e["room"], e["skip_sid"], e["data"]) for e in broadcasts.events(name, "/presence")]
    return on_default


def sequence(broadcasts) -> list[str]:
    """The event names emitted on the default namespace, in order."""
    return [e["event"] for e in broadcasts.sent if e["namespace"] == "/"]


def info(user, status: str, last_seen: float) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "username": user.username,
        "displayName": user.display_name,
        "role": "user",
        "department": None,
        "status": status,
        "lastSeen": iso(last_seen),
    }


@pytest.fixture
def now() -> list[float]:
    return [T0]


@pytest.fixture
def make_presence(app, db, now) -> Callable[..., Presence]:
    """A Presence on memory stores, as nexus/app.py builds it, with config overrides and the fake clock."""

    def make(**overrides: Any) -> Presence:
        config = app.config["NEXUS"].with_overrides(**overrides)
        return Presence(MemoryTally(origin=0), MemoryPresenceStore(), config, clock=lambda: now[0])

    return make


@pytest.fixture
def presence(make_presence) -> Presence:
    return make_presence(away_after_s=60, status_restore_s=300, last_seen_write_s=60)


# -- connections ------------------------------------------------------------------------


def test_first_socket_announces_online_and_the_last_announces_offline(db, presence, broadcasts, make_user, now):
    alice = make_user("alice")
    assert presence.connected(actor_of(alice), "a1") is True
    assert emitted(broadcasts, "user_online") == [
        ("all_users", "a1", {"userId": str(alice.id), "userInfo": info(alice, "online", T0), "version": 1})
    ]
    assert stored(db, alice.id) == ("online", at(T0))
    assert presence.is_online(alice.id)

    now[0] = T0 + 5
    assert presence.connected(actor_of(alice), "a2") is False  # a second tab: nothing to announce
    now[0] = T0 + 8
    presence.touch(actor_of(alice))
    now[0] = T0 + 20
    assert presence.disconnected(actor_of(alice)) is False  # one of two closed: still online
    assert sequence(broadcasts) == ["user_online"]
    assert stored(db, alice.id)[0] == "online"
    assert [entry["userId"] for entry in presence.online_users()] == [str(alice.id)]

    now[0] = T0 + 30
    assert presence.disconnected(actor_of(alice)) is True
    assert emitted(broadcasts, "user_offline") == [
        ("all_users", None, {"userId": str(alice.id), "lastSeen": iso(T0 + 8), "version": 2})  # the last activity
    ]
    assert sequence(broadcasts) == ["user_online", "user_offline"]
    assert stored(db, alice.id) == ("offline", at(T0 + 8))
    assert not presence.is_online(alice.id)
    assert presence.online_users() == []
    assert presence.disconnected(actor_of(alice)) is False  # one close too many: nothing
    assert sequence(broadcasts) == ["user_online", "user_offline"]


def test_online_users_lists_everyone_connected_with_status_and_last_seen(db, presence, make_user, now):
    alice, bob = make_user("alice"), make_user("bob")
    make_user("carol")  # never connects
    presence.connected(actor_of(bob), "b1")
    now[0] = T0 + 1
    presence.connected(actor_of(alice), "a1")
    presence.update_status(actor_of(bob), "busy")
    assert presence.online_users() == [
        {"userId": str(alice.id), "userInfo": info(alice, "online", T0 + 1), "status": "online",
         "lastSeen": iso(T0 + 1), "version": 1},
        {"userId": str(bob.id), "userInfo": info(bob, "busy", T0 + 1), "status": "busy", "lastSeen": iso(T0 + 1),
         "version": 2},  # online, then busy
    ]


def test_guests_have_no_presence(db, presence, broadcasts):
    assert presence.connected(GUEST, "g1") is False
    presence.touch(GUEST)
    assert presence.disconnected(GUEST) is False
    with pytest.raises(NexusError) as refused:
        presence.update_status(GUEST, "busy")
    assert refused.value.code == "FORBIDDEN"
    assert broadcasts.sent == []
    assert presence.online_users() == []


# -- chosen status ------------------------------------------------------------------------


def test_a_chosen_status_is_announced_to_everyone(db, presence, broadcasts, make_user, now):
    alice = make_user("alice")
    presence.connected(actor_of(alice), "a1")
    now[0] = T0 + 3
    answer = presence.update_status(actor_of(alice), "busy")
    update = {"userId": str(alice.id), "status": "busy", "lastSeen": iso(T0 + 3), "version": 2}
    assert answer == update
    assert emitted(broadcasts, "user_updated") == [("all_users", None, update)]
    assert sequence(broadcasts) == ["user_online", "user_updated"]
    assert stored(db, alice.id) == ("busy", at(T0 + 3))
    assert [entry["status"] for entry in presence.online_users()] == ["busy"]


def test_an_unknown_status_is_refused_and_changes_nothing(db, presence, broadcasts, make_user):
    alice = make_user("alice")
    presence.connected(actor_of(alice), "a1")
    for bad in ("sleeping", "", "ONLINE", None):
        with pytest.raises(NexusError) as refused:
            presence.update_status(actor_of(alice), bad)
        assert refused.value.code == "VALIDATION_ERROR"
    assert sequence(broadcasts) == ["user_online"]
    assert stored(db, alice.id) == ("online", at(T0))
    assert presence.store.chosen_status(alice.id) == "online"


def test_invisible_users_look_offline_and_come_back_online(db, presence, broadcasts, make_user, now):
    alice, bob = make_user("alice"), make_user("bob")
    presence.connected(actor_of(alice), "a1")
    presence.connected(actor_of(bob), "b1")
    broadcasts.sent.clear()

    now[0] = T0 + 2
    presence.update_status(actor_of(alice), "offline")
    assert sequence(broadcasts) == ["user_offline", "user_updated"]
    [(room, skip, offline)] = emitted(broadcasts, "user_offline")
    assert (room, skip, offline["userId"]) == ("all_users", None, str(alice.id))
    assert offline["version"] == 2
    assert emitted(broadcasts, "user_updated") == [
        ("all_users", None, {"userId": str(alice.id), "status": "offline", "lastSeen": iso(T0 + 2), "version": 2})
    ]
    assert stored(db, alice.id) == ("offline", at(T0 + 2))
    assert [entry["userId"] for entry in presence.online_users()] == [str(bob.id)]

    broadcasts.sent.clear()
    presence.update_status(actor_of(alice), "offline")  # already invisible: no second user_offline
    assert sequence(broadcasts) == ["user_updated"]

    broadcasts.sent.clear()
    now[0] = T0 + 4
    presence.update_status(actor_of(alice), "online")
    assert sequence(broadcasts) == ["user_online", "user_updated"]
    assert emitted(broadcasts, "user_online") == [
        ("all_users", None, {"userId": str(alice.id), "userInfo": info(alice, "online", T0 + 4), "version": 4})
    ]
    assert emitted(broadcasts, "user_updated") == [
        ("all_users", None, {"userId": str(alice.id), "status": "online", "lastSeen": iso(T0 + 4), "version": 4})
    ]
    assert stored(db, alice.id) == ("online", at(T0 + 4))
    assert sorted(entry["userId"] for entry in presence.online_users()) == sorted([str(alice.id), str(bob.id)])


def test_an_invisible_user_comes_and_goes_unannounced(db, presence, broadcasts, make_user, now):
    alice = make_user("alice")
    presence.connected(actor_of(alice), "a1")
    presence.update_status(actor_of(alice), "offline")
    broadcasts.sent.clear()
    now[0] = T0 + 10
    assert presence.disconnected(actor_of(alice)) is True
    now[0] = T0 + 20
    assert presence.connected(actor_of(alice), "a2") is True  # within status_restore_s: still invisible
    assert broadcasts.sent == []
    assert stored(db, alice.id)[0] == "offline"
    assert presence.online_users() == []


def test_a_chosen_status_is_restored_when_the_user_reconnects_soon(db, presence, broadcasts, make_user, now):
    alice = make_user("alice")
    presence.connected(actor_of(alice), "a1")
    presence.update_status(actor_of(alice), "busy")
    now[0] = T0 + 10
    presence.disconnected(actor_of(alice))
    assert stored(db, alice.id)[0] == "offline"
    broadcasts.sent.clear()

    now[0] = T0 + 20
    assert presence.connected(actor_of(alice), "a2") is True
    assert emitted(broadcasts, "user_online") == [
        ("all_users", "a2", {"userId": str(alice.id), "userInfo": info(alice, "busy", T0 + 20), "version": 4})
    ]
    assert stored(db, alice.id) == ("busy", at(T0 + 20))
    assert presence.store.chosen_status(alice.id) == "busy"


def test_a_chosen_status_is_forgotten_after_status_restore_s(db, make_presence, broadcasts, make_user, now):
    presence = make_presence(status_restore_s=1)
    alice = make_user("alice")
    presence.connected(actor_of(alice), "a1")
    presence.update_status(actor_of(alice), "busy")
    presence.disconnected(actor_of(alice))
    assert presence.store.chosen_status(alice.id) == "busy"  # remembered for now
    deadline = time.monotonic() + 3
    while presence.store.chosen_status(alice.id) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert presence.store.chosen_status(alice.id) is None
    broadcasts.sent.clear()

    presence.connected(actor_of(alice), "a2")
    [(_, _, online)] = emitted(broadcasts, "user_online")
    assert online["userInfo"]["status"] == "online"
    assert stored(db, alice.id)[0] == "online"


def test_with_no_restore_time_a_reconnect_starts_online(db, make_presence, broadcasts, make_user):
    presence = make_presence(status_restore_s=0)
    alice = make_user("alice")
    presence.connected(actor_of(alice), "a1")
    presence.update_status(actor_of(alice), "offline")
    presence.disconnected(actor_of(alice))
    broadcasts.sent.clear()
    presence.connected(actor_of(alice), "a2")
    assert [data["userInfo"]["status"] for _, _, data in emitted(broadcasts, "user_online")] == ["online"]
    assert stored(db, alice.id)[0] == "online"


# -- away after inactivity -------------------------------------------------------------------


def test_an_idle_user_is_shown_away_once_and_back_on_activity(db, presence, broadcasts, make_user, now):
    alice = make_user("alice")
    presence.connected(actor_of(alice), "a1")
    broadcasts.sent.clear()

    now[0] = T0 + 59
    assert presence.sweep_away() == []  # not idle long enough yet
    now[0] = T0 + 61
    assert presence.sweep_away() == [alice.id]
    assert emitted(broadcasts, "user_updated") == [
        ("all_users", None, {"userId": str(alice.id), "status": "away", "lastSeen": iso(T0), "version": 2})
    ]
    assert stored(db, alice.id) == ("away", at(T0))
    assert presence.store.is_away(alice.id)

    now[0] = T0 + 90
    assert presence.sweep_away() == []  # already away: said once
    assert sequence(broadcasts) == ["user_updated"]

    now[0] = T0 + 95
    presence.touch(actor_of(alice))
    assert sequence(broadcasts) == ["user_updated", "user_updated"]
    assert emitted(broadcasts, "user_updated")[1] == (
        "all_users", None, {"userId": str(alice.id), "status": "online", "lastSeen": iso(T0 + 95), "version": 3}
    )
    assert stored(db, alice.id) == ("online", at(T0 + 95))
    assert not presence.store.is_away(alice.id)
    now[0] = T0 + 96
    presence.touch(actor_of(alice))
    assert presence.sweep_away() == []
    assert len(broadcasts.sent) == 4  # two user_updated, on "/" and "/presence" each


def test_users_who_chose_a_status_are_never_marked_away(db, presence, broadcasts, make_user, now):
    busy, invisible = make_user("busy"), make_user("invisible")
    for user, status in ((busy, "busy"), (invisible, "offline")):
        presence.connected(actor_of(user), f"s{user.id}")
        presence.update_status(actor_of(user), status)
    broadcasts.sent.clear()
    for minutes in (2, 5, 30):
        now[0] = T0 + 60 * minutes
        assert presence.sweep_away() == []
    assert broadcasts.sent == []
    assert stored(db, busy.id)[0] == "busy"
    assert stored(db, invisible.id)[0] == "offline"

    presence.update_status(actor_of(busy), "online")  # online again: watched again
    now[0] += 61
    assert presence.sweep_away() == [busy.id]
    assert stored(db, busy.id)[0] == "away"


def test_sweeps_with_a_limit_reach_every_idle_user(db, presence, make_user, now):
    users = [make_user(f"user{i}") for i in range(3)]
    for offset, user in enumerate(users):
        now[0] = T0 + offset
        presence.connected(actor_of(user), f"s{user.id}")
    now[0] = T0 + 120
    marked = []
    for _ in range(3):
        marked += presence.sweep_away(limit=1)
    assert sorted(marked) == sorted(user.id for user in users)
    assert {stored(db, user.id)[0] for user in users} == {"away"}


def test_a_new_socket_of_an_away_user_brings_them_back(db, presence, broadcasts, make_user, now):
    alice = make_user("alice")
    presence.connected(actor_of(alice), "a1")
    now[0] = T0 + 61
    assert presence.sweep_away() == [alice.id]
    broadcasts.sent.clear()

    now[0] = T0 + 100
    presence.connected(actor_of(alice), "a2")  # opens a new tab...
    presence.touch(actor_of(alice))  # ...and uses it
    assert stored(db, alice.id)[0] == "online"
    assert [data["status"] for _, _, data in emitted(broadcasts, "user_updated")] == ["online"]
    assert not presence.store.is_away(alice.id)


def test_touches_within_touch_every_s_write_the_store_once(db, presence, make_user, now):
    alice = make_user("alice")
    presence.connected(actor_of(alice), "a1")
    writes: list[tuple[int, float]] = []
    touch = presence.store.touch
    presence.store.touch = lambda user_id, when: (writes.append((user_id, when)), touch(user_id, when))[1]
    assert presence.touch_every_s == 15  # away_after_s / 4

    for step in range(10):  # all within 15 s of the connection's write
        now[0] = T0 + step
        presence.touch(actor_of(alice))
    assert writes == []

    now[0] = T0 + 20
    for step in range(20):  # a burst: the first one writes
        presence.touch(actor_of(alice))
        now[0] += 0.5
    assert writes == [(alice.id, T0 + 20)]
    assert presence.store.last_activity(alice.id) == T0 + 20

    now[0] = T0 + 36  # 16 s after the last write
    presence.touch(actor_of(alice))
    assert writes == [(alice.id, T0 + 20), (alice.id, T0 + 36)]


# -- background upkeep --------------------------------------------------------------------


def test_flush_last_seen_writes_pending_activity_once(db, presence, broadcasts, make_user, now):
    alice, bob = make_user("alice"), make_user("bob")
    presence.connected(actor_of(alice), "a1")
    presence.connected(actor_of(bob), "b1")
    assert presence.flush_last_seen() == 0  # connecting wrote last seen already

    now[0] = T0 + 5
    presence.touch(actor_of(alice))
    now[0] = T0 + 6
    presence.touch(actor_of(bob))
    now[0] = T0 + 7
    presence.touch(actor_of(alice))
    assert stored(db, alice.id) == ("online", at(T0))  # not written on each touch
    broadcasts.sent.clear()

    assert presence.flush_last_seen() == 2  # one row per user
    assert stored(db, alice.id) == ("online", at(T0 + 7))
    assert stored(db, bob.id) == ("online", at(T0 + 6))
    assert presence.flush_last_seen() == 0
    assert broadcasts.sent == []


def test_flush_last_seen_skips_users_who_left(db, presence, make_user, now):
    alice = make_user("alice")
    presence.connected(actor_of(alice), "a1")
    now[0] = T0 + 5
    presence.touch(actor_of(alice))
    now[0] = T0 + 9
    presence.disconnected(actor_of(alice))
    assert presence.flush_last_seen() == 0
    assert stored(db, alice.id) == ("offline", at(T0 + 5))


def test_reconcile_takes_users_without_sockets_offline(db, presence, broadcasts, make_user):
    alice, bob, carol, dave = (make_user(name) for name in ("alice", "bob", "carol", "dave"))
    presence.connected(actor_of(alice), "a1")
    # Shown present by the database, though no socket of theirs is connected anywhere
    # (say their instance died while no other one was running).
    for user, status in ((bob, "online"), (carol, "busy")):
        db.session.get(User, user.id).status = status
    db.session.commit()
    broadcasts.sent.clear()

    assert presence.reconcile() == 2
    assert stored(db, alice.id)[0] == "online"
    assert stored(db, bob.id)[0] == "offline"
    assert stored(db, carol.id)[0] == "offline"
    assert stored(db, dave.id)[0] == "offline"
    assert presence.reconcile() == 0
    # Announced, with their current version: a client that had them online from a lost event drops them.
    assert sorted(data["userId"] for _, _, data in emitted(broadcasts, "user_offline")) == sorted([str(bob.id), str(carol.id)])
    assert sequence(broadcasts) == ["user_offline", "user_offline"]


def test_reaped_users_go_offline_announced_only_when_visible(db, presence, broadcasts, make_user, now):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    presence.connected(actor_of(alice), "a1")
    presence.connected(actor_of(bob), "b1")
    presence.connected(actor_of(carol), "c1")
    now[0] = T0 + 1
    presence.update_status(actor_of(bob), "offline")  # invisible
    now[0] = T0 + 20
    presence.touch(actor_of(alice))  # written to the store: 20 s after the last write
    broadcasts.sent.clear()

    now[0] = T0 + 40
    for user in (alice, bob):  # their instance died and was reaped: out of the tally, versions raised
        presence.tally.leave("presence", str(user.id))
    presence.went_offline([alice.id, bob.id])  # no last_seen of its own

    assert emitted(broadcasts, "user_offline") == [
        # the last activity in the store; a new version, taken as her absence was read (no decision
        # handed in): above the one the reap raised
        ("all_users", None, {"userId": str(alice.id), "lastSeen": iso(T0 + 20), "version": 3})
    ]
    assert sequence(broadcasts) == ["user_offline"]
    assert stored(db, alice.id) == ("offline", at(T0 + 20))
    assert stored(db, bob.id) == ("offline", at(T0 + 1))
    assert stored(db, carol.id)[0] == "online"
    assert presence.store.last_activity(alice.id) is None
    assert presence.store.chosen_status(bob.id) == "offline"  # still invisible if bob comes back soon


# -- several instances on Redis ----------------------------------------------------------------


def test_users_of_an_instance_that_recovers_from_a_stall_are_online_again(app_factory, make_user):
    """Instance a stalls past its heartbeat TTL, b reaps it and announces alice offline; a recovers
    with alice's socket still open: alice must be shown online again."""
    services.require("redis")
    channel = f"nexus-test-{uuid4().hex}"
    apps = {name: app_factory(redis_url=services.REDIS_URL, queue_channel=channel, instance_id=name) for name in "ab"}
    recorders = {}
    keepers = {}
    for name, instance in apps.items():
        recorders[name] = BroadcastRecorder()
        instance.extensions["nexus.broadcaster"].transport = recorders[name]
        keepers[name] = Keeper.for_app(instance, sleep=lambda seconds: None)
    client = connect(services.REDIS_URL)
    try:
        alice, bob = make_user("alice"), make_user("bob")
        for name in "ab":
            keepers[name].run_once(force=True)
        with apps["a"].app_context():
            assert apps["a"].extensions["nexus.presence"].connected(actor_of(alice), "a1") is True
        with apps["b"].app_context():
            assert apps["b"].extensions["nexus.presence"].connected(actor_of(bob), "b1") is True

        client.delete(f"{channel}:state:inst:a")  # a stalled for longer than INSTANCE_TTL_S
        keepers["b"].run_once(force=True)
        assert [e["data"]["userId"] for e in recorders["b"].events("user_offline")] == [str(alice.id)]
        with apps["b"].app_context():
            assert str(alice.id) not in [u["userId"] for u in apps["b"].extensions["nexus.presence"].online_users()]

        keepers["a"].run_once(force=True)  # a is back; alice never closed her socket
        keepers["b"].run_once(force=True)
        with apps["b"].app_context():
            presence_b = apps["b"].extensions["nexus.presence"]
            assert presence_b.is_online(alice.id)  # the tally has her again
            listed = [u["userId"] for u in presence_b.online_users()]
            status = nexus_db.session.get(User, alice.id).status
        assert str(alice.id) in listed, "alice is connected but left out of the online list"
        assert status == "online"
        announced = [e["data"]["userId"] for name in "ab" for e in recorders[name].events("user_online")]
        assert announced.count(str(alice.id)) == 2  # on connecting, and again once her instance is back
    finally:
        for name in "ab":
            apps[name].extensions["nexus.stores"].tally.close()
        keys = list(client.scan_iter(match=f"{channel}*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


# -- convergence: versions, settling, reconcile both ways ------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def pair(request, app, db, now) -> Iterator[tuple[Presence, Presence]]:
    """Two instances' Presence on one shared store: one memory tally, or two Redis instances."""
    config = app.config["NEXUS"].with_overrides(away_after_s=60, status_restore_s=300, last_seen_write_s=60)
    clock = lambda: now[0]  # noqa: E731
    if request.param == "memory":
        tally, store = MemoryTally(origin=0), MemoryPresenceStore()
        yield Presence(tally, store, config, clock=clock), Presence(tally, store, config, clock=clock)
        return
    services.require("redis")
    client = connect(services.REDIS_URL)
    prefix = f"nexus-test-{uuid4().hex}:state"
    tallies = [RedisTally(client, prefix, name) for name in "ab"]
    for tally in tallies:
        tally.heartbeat()
    store = RedisPresenceStore(client, prefix)
    try:
        yield tuple(Presence(tally, store, config, clock=clock) for tally in tallies)  # type: ignore[misc]
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


def presence_events(broadcasts, user_id: int) -> list[tuple[str, dict[str, Any]]]:
    """The presence events about one user on the default namespace, in the order they were sent."""
    return [(e["event"], e["data"]) for e in broadcasts.sent
            if e["namespace"] == "/" and e["event"] in ("user_online", "user_offline", "user_updated")
            and e["data"]["userId"] == str(user_id)]


def view(snapshot: list[dict[str, Any]], received: list[tuple[str, dict[str, Any]]]) -> dict[str, str]:
    """What a client shows: its `online_users` snapshot, then each event applied only if its version is
    newer than what it has for that user. userId -> status, for the users it shows online."""
    known: dict[str, tuple[int, str]] = {e["userId"]: (e["version"], e["status"]) for e in snapshot}
    for event, data in received:
        version = data["version"]
        if version <= known.get(data["userId"], (-1, ""))[0]:
            continue  # stale
        if event == "user_offline":
            status = "offline"
        elif event == "user_online":
            status = data["userInfo"]["status"]
        else:
            status = data["status"]
        known[data["userId"]] = (version, status)
    return {user_id: status for user_id, (_, status) in known.items() if status != "offline"}


def test_an_older_offline_written_after_a_newer_online_changes_nothing(db, pair, broadcasts, make_user, now,
                                                                       monkeypatch):
    """Alice's socket on A closes as she reconnects through B: A decides `offline` first, B decides
    `online` after, but A's database write and announcement land last. The database keeps B's
    newer write, and clients drop A's older announcement."""
    a, b = pair
    alice = make_user("alice")
    assert a.connected(actor_of(alice), "a1") is True
    leave = a.tally.leave

    def leave_then_b_connects(scope: str, member: str) -> int:
        version = leave(scope, member)
        now[0] += 1
        assert b.connected(actor_of(alice), "b1") is True  # decided after A's departure, written first
        assert stored(db, alice.id)[0] == "online"
        return version

    monkeypatch.setattr(a.tally, "leave", leave_then_b_connects)
    now[0] = T0 + 5
    assert a.disconnected(actor_of(alice)) is True

    assert stored(db, alice.id)[0] == "online"
    sent = presence_events(broadcasts, alice.id)
    assert [event for event, _ in sent] == ["user_online", "user_online", "user_offline"]
    first, from_b, stale = (data["version"] for _, data in sent)
    assert first < stale < from_b  # the offline was decided before B's online
    # A client that applies events by version shows her online whatever order they reach it in.
    assert view([], sent) == {str(alice.id): "online"}
    assert view([], [sent[0], sent[2], sent[1]]) == {str(alice.id): "online"}
    [listed] = b.online_users()
    assert (listed["userId"], listed["status"], listed["version"]) == (str(alice.id), "online", from_b)
    assert view([listed], sent) == {str(alice.id): "online"}


def test_a_newer_offline_is_not_undone_by_an_older_online_written_last(db, pair, broadcasts, make_user, now,
                                                                        monkeypatch):
    """B lets alice in (first socket anywhere) but its write is slow; meanwhile her socket is counted
    out (what a reap of B's entries looks like to the others) and that departure is written and
    announced first. B's older `online` lands last and changes nothing."""
    a, b = pair
    alice = make_user("alice")
    assert a.connected(actor_of(alice), "a1") is True
    assert a.disconnected(actor_of(alice)) is True
    enter = b.tally.enter

    def enter_then_a_connects_and_leaves(scope: str, member: str) -> int:
        version = enter(scope, member)
        # B's socket is counted; before B writes anything, the count drops to zero and the
        # departure is written and announced.
        gone = b.tally.leave(scope, member)
        a.went_offline([alice.id], versions={alice.id: gone})
        return version

    monkeypatch.setattr(b.tally, "enter", enter_then_a_connects_and_leaves)
    broadcasts.sent.clear()
    b.connected(actor_of(alice), "b1")
    assert stored(db, alice.id)[0] == "offline"
    sent = presence_events(broadcasts, alice.id)
    assert [event for event, _ in sent] == ["user_offline", "user_online"]
    assert sent[0][1]["version"] > sent[1][1]["version"]
    assert view([], sent) == {}
    assert b.online_users() == []


def test_reconcile_brings_back_connected_users_the_database_shows_offline(db, pair, broadcasts, make_user, now):
    a, b = pair
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    a.connected(actor_of(alice), "a1")
    b.connected(actor_of(bob), "b1")
    b.connected(actor_of(carol), "c1")
    b.update_status(actor_of(carol), "offline")  # invisible: offline is right for her
    # A lost write (an instance died between deciding and writing, say): alice connected, shown offline.
    db.session.get(User, alice.id).status = "offline"
    db.session.get(User, bob.id).status = "away"  # and bob with a status he does not have
    db.session.commit()
    broadcasts.sent.clear()

    assert b.reconcile() == 2
    assert stored(db, alice.id)[0] == "online"
    assert stored(db, bob.id)[0] == "online"
    assert stored(db, carol.id)[0] == "offline"
    [(event, data)] = presence_events(broadcasts, alice.id)
    assert event == "user_online" and data["userInfo"]["status"] == "online"
    assert data["version"] == a.tally.version("presence", str(alice.id))
    assert presence_events(broadcasts, carol.id) == []
    assert a.reconcile() == 0 and b.reconcile() == 0  # repaired once, by whichever instance ran first
    assert sorted(entry["userId"] for entry in a.online_users()) == sorted([str(alice.id), str(bob.id)])


def test_online_users_takes_status_and_version_from_the_shared_store(db, pair, broadcasts, make_user, now):
    a, b = pair
    alice, bob = make_user("alice"), make_user("bob")
    a.connected(actor_of(alice), "a1")
    b.connected(actor_of(bob), "b1")
    now[0] = T0 + 61
    assert sorted(a.sweep_away()) == sorted([alice.id, bob.id])
    db.session.get(User, bob.id).status = "offline"  # the database lags behind: the list does not
    db.session.commit()
    listed = {entry["userId"]: entry for entry in b.online_users()}
    assert {user_id: entry["status"] for user_id, entry in listed.items()} == {str(alice.id): "away",
                                                                              str(bob.id): "away"}
    assert listed[str(alice.id)]["userInfo"]["status"] == "away"
    assert listed[str(alice.id)]["version"] == a.tally.version("presence", str(alice.id))
    # The away announcement carried that same version.
    [(_, away)] = [(e, d) for e, d in presence_events(broadcasts, alice.id) if e == "user_updated"]
    assert away["status"] == "away" and away["version"] == listed[str(alice.id)]["version"]


def test_an_away_mark_undone_elsewhere_is_announced_as_what_the_store_holds(db, pair, broadcasts, make_user, now,
                                                                            monkeypatch):
    """A's sweep marks alice away just as her activity on B clears it: whichever announcement has
    the higher version says what the store holds (online), and so does the database."""
    a, b = pair
    alice = make_user("alice")
    a.connected(actor_of(alice), "a1")
    b.connected(actor_of(alice), "b1")
    set_away = a.store.set_away

    def set_away_then_activity_on_b(user_id: int) -> bool:
        marked = set_away(user_id)
        b.touch(actor_of(alice))  # clears the mark and announces online before A announces anything
        return marked

    monkeypatch.setattr(a.store, "set_away", set_away_then_activity_on_b)
    now[0] = T0 + 61
    broadcasts.sent.clear()
    a.sweep_away()
    sent = presence_events(broadcasts, alice.id)
    assert view([], sent) == {str(alice.id): "online"}
    assert stored(db, alice.id)[0] == "online"
    assert [entry["status"] for entry in a.online_users()] == ["online"]


@pytest.mark.parametrize("namespace", ["/", "/presence"])
def test_the_snapshot_on_connect_is_taken_in_all_users_with_versions(app, db, socket_client, make_user, token_for,
                                                                     monkeypatch, namespace):
    """The `online_users` a new socket gets is read once the socket is in `all_users` (so nothing it
    was sent before can be newer), from the shared store, with each user's version."""
    from nexus.extensions import socketio

    alice, bob = make_user("alice"), make_user("bob")
    presence = app.extensions["nexus.presence"]
    socket_client(token=token_for(bob))
    read_in: list[set[str]] = []
    online_users = presence.online_users

    def spy() -> list[dict[str, Any]]:
        manager = socketio.server.manager
        read_in.append({sid for sid, _ in manager.get_participants(namespace, "all_users")})
        return online_users()

    monkeypatch.setattr(presence, "online_users", spy)
    client = socket_client(token=token_for(alice), namespace=namespace)
    [snapshot] = [item["args"][0] for item in client.get_received(namespace) if item["name"] == "online_users"]
    sid = socketio.server.manager.sid_from_eio_sid(client.eio_sid, namespace)
    assert read_in and sid in read_in[0]
    versions = presence.tally.versioned_members("presence")
    assert {entry["userId"]: entry["version"] for entry in snapshot} == {
        str(alice.id): versions[str(alice.id)], str(bob.id): versions[str(bob.id)]}
    assert {entry["status"] for entry in snapshot} == {"online"}


@pytest.mark.parametrize("namespace", ["/", "/presence"])
def test_events_that_went_out_while_the_snapshot_was_read_are_applied_to_it(app, db, socket_client, make_user,
                                                                            token_for, monkeypatch, namespace):
    """A presence event delivered to the new socket while its list was being read arrives ahead of
    the list and may be newer than it: the list goes out with it applied. One the list cannot take
    (a status of a user it does not have) makes it read again."""
    from nexus.extensions import socketio

    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    presence = app.extensions["nexus.presence"]
    socket_client(token=token_for(bob))
    online_users = presence.online_users
    reads: list[int] = []

    def racing() -> list[dict[str, Any]]:
        listed = online_users()
        reads.append(len(listed))
        if len(reads) == 1:  # right after the first read: bob goes busy, carol (not listed) away
            for user, status in ((bob, "busy"), (carol, "away")):
                version = presence.tally.bump("presence", str(user.id))
                socketio.emit("user_updated", {"userId": str(user.id), "status": status, "lastSeen": None,
                                               "version": version}, to="all_users", namespace=namespace)
        return listed

    monkeypatch.setattr(presence, "online_users", racing)
    client = socket_client(token=token_for(alice), namespace=namespace)
    received = [(item["name"], item["args"][0]) for item in client.get_received(namespace)
                if item["name"] in ("online_users", "user_updated")]
    assert [name for name, _ in received] == ["user_updated", "user_updated", "online_users"]
    assert len(reads) == 2  # carol's update could not be applied: read again
    newer = received[0][1]["version"]
    listed = {entry["userId"]: entry for entry in received[2][1]}
    assert listed[str(bob.id)]["version"] >= newer  # never older than what came before it
    assert sorted(listed) == sorted([str(alice.id), str(bob.id)])


def test_with_events_applies_newer_events_to_an_online_list():
    from nexus.services.presence import with_events

    def entry(user_id: str, status: str, version: int) -> dict[str, Any]:
        info = {"id": user_id, "username": f"u{user_id}", "status": status, "lastSeen": None}
        return {"userId": user_id, "userInfo": info, "status": status, "lastSeen": None, "version": version}

    listed = [entry("1", "online", 5), entry("2", "online", 5), entry("3", "busy", 5)]
    seen = [
        ("user_offline", {"userId": "1", "lastSeen": None, "version": 6}),  # newer: gone
        ("user_offline", {"userId": "2", "lastSeen": None, "version": 4}),  # older: ignored
        ("user_updated", {"userId": "3", "status": "away", "lastSeen": "x", "version": 7}),
        ("user_online", {"userId": "4", "userInfo": entry("4", "online", 1)["userInfo"], "version": 2}),
        ("message", {"userId": "5"}),  # not presence
    ]
    applied, complete = with_events(listed, seen)
    assert complete
    assert [(e["userId"], e["status"], e["version"]) for e in applied] == [("2", "online", 5), ("3", "away", 7),
                                                                           ("4", "online", 2)]
    assert applied[1]["userInfo"]["status"] == "away" and listed[2]["status"] == "busy"  # the input is untouched
    _, complete = with_events(listed, [("user_updated", {"userId": "9", "status": "busy", "version": 1})])
    assert not complete
    assert with_events(listed, []) == (listed, True)


def test_a_repair_never_announces_under_a_version_already_announced(db, pair, broadcasts, make_user, now,
                                                                    monkeypatch):
    """Reconcile finds alice shown online with no socket anywhere, but she connects through B before
    the repair: her arrival's `user_online` is the truth, and no `user_offline` goes out under its
    version (a client that got the offline first would drop the online and keep her offline)."""
    a, b = pair
    alice = make_user("alice")
    db.session.get(User, alice.id).status = "online"  # a write its instance's death left behind
    db.session.commit()
    statuses = a.store.statuses

    def she_connects_meanwhile(user_ids: list[int]) -> dict[int, tuple[str | None, bool]]:
        read = statuses(user_ids)
        if not b.tally.members("presence"):
            assert b.connected(actor_of(alice), "b1") is True
        return read

    monkeypatch.setattr(a.store, "statuses", she_connects_meanwhile)
    broadcasts.sent.clear()
    a.reconcile()
    sent = presence_events(broadcasts, alice.id)
    assert [event for event, _ in sent] == ["user_online"]
    versions = [data["version"] for _, data in sent]
    assert len(versions) == len(set(versions))
    assert view([], sent) == {str(alice.id): "online"}
    assert stored(db, alice.id)[0] == "online"


def test_a_user_on_an_instance_that_stopped_is_settled_offline_above_her_arrival(db, pair, broadcasts, make_user,
                                                                                  now, monkeypatch):
    """Her instance stopped counting (its heartbeat expired) but is not reaped yet: a repair that
    reads her absent announces it under a version above her arrival's, which every client applies."""
    a, b = pair
    alice = make_user("alice")
    assert a.connected(actor_of(alice), "a1") is True
    [(_, arrival)] = presence_events(broadcasts, alice.id)
    restate = b.tally.restate
    monkeypatch.setattr(b.tally, "restate", lambda scope, members: [
        (False, version) for _, version in restate(scope, members)])  # what an expired heartbeat reads like
    broadcasts.sent.clear()
    assert b.settle(alice.id) == "offline"
    [(event, data)] = presence_events(broadcasts, alice.id)
    assert event == "user_offline" and data["version"] > arrival["version"]
    assert view([], [("user_online", arrival), (event, data)]) == {}
    assert view([], [(event, data), ("user_online", arrival)]) == {}
    assert stored(db, alice.id)[0] == "offline"
