"""MemoryPresenceStore and RedisPresenceStore keep the same presence details the same way; both tallies
version presence the same way."""
from __future__ import annotations

import threading
import time
from typing import Iterator
from uuid import uuid4

import pytest

from nexus.stores.memory import MemoryPresenceStore, MemoryTally
from nexus.stores.redis import RedisPresenceStore, RedisTally, connect
from tests.support import services

T0 = 1_700_000_000.0


@pytest.fixture(params=["memory", "redis"])
def store(request) -> Iterator[object]:
    if request.param == "memory":
        yield MemoryPresenceStore()
        return
    services.require("redis")
    client = connect(services.REDIS_URL)
    prefix = f"nexus-test-{uuid4().hex}:state"
    try:
        yield RedisPresenceStore(client, prefix)
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


def wait_until(condition, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_chosen_status_is_kept_per_user(store):
    assert store.chosen_status(1) is None
    store.choose_status(1, "busy")
    store.choose_status(2, "offline")
    assert store.chosen_status(1) == "busy"
    assert store.chosen_status(2) == "offline"
    store.choose_status(1, "online")
    assert store.chosen_status(1) == "online"
    assert store.chosen_status(3) is None


def test_a_remembered_status_expires(store):
    store.choose_status(1, "busy")
    store.choose_status(2, "offline")
    store.remember_status(1, 1)
    assert store.chosen_status(1) == "busy"  # still remembered for a while
    assert wait_until(lambda: store.chosen_status(1) is None)
    assert store.chosen_status(2) == "offline"  # not remembered-for-a-while: kept


def test_choosing_again_cancels_the_expiry(store):
    store.choose_status(1, "busy")
    store.remember_status(1, 1)
    store.choose_status(1, "busy")  # reconnected: kept while connected
    time.sleep(1.3)
    assert store.chosen_status(1) == "busy"


def test_remembering_for_zero_seconds_forgets_now(store):
    store.choose_status(1, "busy")
    store.remember_status(1, 0)
    assert store.chosen_status(1) is None


def test_remembering_an_unknown_status_creates_nothing(store):
    store.remember_status(7, 60)
    assert store.chosen_status(7) is None


def test_activity_is_recorded_and_read_back(store):
    assert store.last_activity(1) is None
    store.touch(1, T0)
    store.touch(2, T0 + 5.25)
    assert store.last_activity(1) == T0
    assert store.last_activity(2) == T0 + 5.25
    store.touch(1, T0 + 10.5)
    assert store.last_activity(1) == T0 + 10.5


def test_idle_since_lists_users_whose_activity_is_before_the_cutoff(store):
    store.touch(1, T0)
    store.touch(2, T0 + 10)
    store.touch(3, T0 + 20)
    assert sorted(store.idle_since(T0 + 15, 100)) == [1, 2]
    assert sorted(store.idle_since(T0 + 10, 100)) == [1]  # strictly before the cutoff
    assert store.idle_since(T0, 100) == []
    assert sorted(store.idle_since(T0 + 21, 100)) == [1, 2, 3]
    store.touch(1, T0 + 30)  # active again: no longer idle
    assert sorted(store.idle_since(T0 + 25, 100)) == [2, 3]


def test_idle_since_returns_the_longest_idle_first_up_to_the_limit(store):
    # Recorded in an order that is not the order of the times.
    store.touch(3, T0 + 30)
    store.touch(1, T0 + 10)
    store.touch(2, T0 + 20)
    store.touch(4, T0 + 5)
    assert len(store.idle_since(T0 + 100, 2)) == 2
    assert store.idle_since(T0 + 100, 2) == [4, 1]
    assert store.idle_since(T0 + 100, 10) == [4, 1, 2, 3]


def test_forget_activity_stops_tracking_and_clears_away(store):
    store.touch(1, T0)
    store.touch(2, T0)
    assert store.set_away(1) is True
    store.forget_activity(1)
    assert store.last_activity(1) is None
    assert store.idle_since(T0 + 100, 10) == [2]
    assert store.is_away(1) is False
    assert store.set_away(1) is True  # the away flag was cleared, not kept
    store.forget_activity(99)  # unknown user: nothing to do, no error
    assert store.last_activity(2) == T0


def test_set_away_is_true_once(store):
    assert store.is_away(1) is False
    assert store.set_away(1) is True
    assert store.set_away(1) is False
    assert store.is_away(1) is True
    assert store.is_away(2) is False


def test_clear_away_is_true_once(store):
    assert store.clear_away(1) is False  # never away
    store.set_away(1)
    store.set_away(2)
    assert store.clear_away(1) is True
    assert store.clear_away(1) is False
    assert store.is_away(1) is False
    assert store.is_away(2) is True
    assert store.set_away(1) is True  # can be marked away again


def test_statuses_reads_chosen_statuses_and_away_flags_together(store):
    store.choose_status(1, "busy")
    store.choose_status(2, "online")
    store.set_away(2)
    assert store.statuses([]) == {}
    assert store.statuses([1, 2, 3]) == {1: ("busy", False), 2: ("online", True), 3: (None, False)}


# -- versions of presence, in the tally that decides it ---------------------------------------

PRESENCE = "presence"


@pytest.fixture
def redis_state() -> Iterator[tuple[object, str]]:
    services.require("redis")
    client = connect(services.REDIS_URL)
    prefix = f"nexus-test-{uuid4().hex}:state"
    try:
        yield client, prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def instance(redis_state):
    """A live RedisTally (heartbeat sent) for an instance id on this test's prefix."""
    client, prefix = redis_state

    def make(instance_id: str) -> RedisTally:
        tally = RedisTally(client, prefix, instance_id)
        tally.heartbeat()
        return tally

    return make


@pytest.fixture(params=["memory", "redis"])
def tally(request):
    if request.param == "memory":
        return MemoryTally()
    return request.getfixturevalue("instance")("solo")


def test_the_first_and_last_socket_raise_the_version_others_do_not(tally):
    first = tally.enter(PRESENCE, "1")
    assert first > 0
    assert tally.enter(PRESENCE, "1") == 0  # a second socket: nothing others see
    assert tally.state(PRESENCE, "1") == (True, first)
    assert tally.leave(PRESENCE, "1") == 0
    last = tally.leave(PRESENCE, "1")
    assert last > first
    assert tally.state(PRESENCE, "1") == (False, last)
    assert tally.leave(PRESENCE, "1") == 0  # one close too many: no change, no version
    assert tally.version(PRESENCE, "1") == last
    again = tally.enter(PRESENCE, "1")
    assert again > last
    assert tally.members(PRESENCE) == {"1"}  # enter/leave count like add/remove


def test_bump_raises_the_version_for_a_change_that_is_not_a_socket(tally):
    entered = tally.enter(PRESENCE, "1")
    bumped = tally.bump(PRESENCE, "1")
    assert bumped > entered
    assert tally.state(PRESENCE, "1") == (True, bumped)
    assert tally.bump(PRESENCE, "1") > bumped


def test_versioned_members_lists_who_is_present_with_their_versions(tally):
    v1 = tally.enter(PRESENCE, "1")
    v2 = tally.enter(PRESENCE, "2")
    tally.enter(PRESENCE, "3")
    tally.leave(PRESENCE, "3")
    v2 = tally.bump(PRESENCE, "2")
    assert tally.versioned_members(PRESENCE) == {"1": v1, "2": v2}
    tally.add("room:general", "u:1")  # unversioned scopes count as before
    assert tally.members("room:general") == {"u:1"}
    assert tally.remove("room:general", "u:1") is True


def test_restate_reads_who_is_present_under_a_version_never_handed_out_before(tally):
    entered = tally.enter(PRESENCE, "1")
    left = tally.enter(PRESENCE, "2")
    left = tally.leave(PRESENCE, "2")
    [(present_1, v1), (present_2, v2), (present_3, v3)] = tally.restate(PRESENCE, ["1", "2", "3"])
    assert (present_1, present_2, present_3) == (True, False, False)
    assert v1 > entered and v2 > left and v3 > 0
    assert tally.versions(PRESENCE, ["1", "2", "3"]) == [v1, v2, v3]
    assert tally.restate(PRESENCE, []) == []


def test_a_restarted_process_hands_out_versions_above_the_earlier_ones():
    """The database keeps the version of the last status written: a new process's must be higher."""
    before = MemoryTally().enter(PRESENCE, "1")
    assert MemoryTally().enter(PRESENCE, "1") > before
    assert MemoryTally(origin=0).enter(PRESENCE, "1") == 1


def test_restate_takes_an_unreaped_dead_instance_as_absent_with_a_new_version(instance, redis_state):
    """The state that changed without a version (a heartbeat that expired): a repair announcing it
    must not reuse the version its arrival was announced with."""
    client, prefix = redis_state
    a, b = instance("a"), instance("b")
    arrived = a.enter(PRESENCE, "1")
    client.delete(f"{prefix}:inst:a")  # a died: no heartbeat, not reaped yet
    [(present, version)] = b.restate(PRESENCE, ["1"])
    assert present is False and version > arrived


def test_a_member_on_two_instances_is_versioned_once_on_arrival_and_once_on_departure(instance, redis_state):
    a, b = instance("a"), instance("b")
    arrived = a.enter(PRESENCE, "1")
    assert arrived > 0
    assert b.enter(PRESENCE, "1") == 0  # already present through a
    assert a.leave(PRESENCE, "1") == 0  # still on b: no departure
    assert b.state(PRESENCE, "1") == (True, arrived)
    departed = b.leave(PRESENCE, "1")
    assert departed == arrived + 1
    assert a.state(PRESENCE, "1") == (False, departed)


def test_reaping_a_dead_instance_raises_the_version_of_who_left_with_it(instance, redis_state):
    client, prefix = redis_state
    a, b = instance("a"), instance("b")
    only_a = a.enter(PRESENCE, "1")
    a.enter(PRESENCE, "2")
    b.enter(PRESENCE, "2")
    both = b.version(PRESENCE, "2")
    client.delete(f"{prefix}:inst:a")  # a died: no heartbeat
    assert b.state(PRESENCE, "1") == (False, only_a)  # absent already, not yet reaped
    assert b.reap() == [(PRESENCE, "1")]
    assert b.state(PRESENCE, "1") == (False, only_a + 1)  # the departure is versioned once reaped
    assert b.state(PRESENCE, "2") == (True, both)  # still on b: nothing changed
    assert b.reap() == []
    assert b.version(PRESENCE, "1") == only_a + 1


def test_versions_survive_a_redis_that_lost_them(instance, redis_state):
    """Redis restarted without its data: versions start again above every one handed out before."""
    client, prefix = redis_state
    a = instance("a")
    before = a.enter(PRESENCE, "1")
    before = max(before, a.leave(PRESENCE, "1"))
    client.hdel(f"{prefix}:v:{PRESENCE}", "1")
    after = a.enter(PRESENCE, "1")
    assert after > before
    client.hdel(f"{prefix}:v:{PRESENCE}", "1")
    present, read = a.state(PRESENCE, "1")  # a read of a lost version hands out a new one too
    assert present and read > after
    assert a.versioned_members(PRESENCE)["1"] == read


def test_concurrent_arrivals_and_departures_on_two_instances_get_one_version_each(instance):
    """Many sockets of one member opening and closing at once on two instances: every first and
    last socket anywhere gets its own version, in the order they happened, and the last one decides."""
    a, b = instance("a"), instance("b")
    handed: list[tuple[str, int]] = []
    lock = threading.Lock()

    def churn(tally: RedisTally, rounds: int) -> None:
        for _ in range(rounds):
            version = tally.enter(PRESENCE, "1")
            if version:
                with lock:
                    handed.append(("in", version))
            version = tally.leave(PRESENCE, "1")
            if version:
                with lock:
                    handed.append(("out", version))

    threads = [threading.Thread(target=churn, args=(tally, 60)) for tally in (a, b, a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    versions = sorted(version for _, version in handed)
    assert len(versions) == len(set(versions)), "two decisions got the same version"
    ordered = [kind for kind, _ in sorted(handed, key=lambda item: item[1])]
    # Ordered by version, arrivals and departures alternate: each decision follows the one before it.
    assert all(x != y for x, y in zip(ordered, ordered[1:])), ordered
    assert ordered[0] == "in" and ordered[-1] == "out"
    assert a.state(PRESENCE, "1") == (False, versions[-1])


def test_versions_reads_several_members_in_order(tally):
    one = tally.enter(PRESENCE, "1")
    two = tally.bump(PRESENCE, "2")
    assert tally.versions(PRESENCE, ["2", "1"]) == [two, one]
    assert tally.versions(PRESENCE, []) == []
