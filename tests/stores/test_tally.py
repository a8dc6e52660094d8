"""The Tally contract: memory for one process, Redis for many instances (first/last, members, reaping)."""
from __future__ import annotations

from typing import Callable, Iterator
from uuid import uuid4

import pytest

from nexus.stores.memory import MemoryTally
from nexus.stores.redis import RedisTally, connect
from tests.support import services

SCOPE = "presence"
ROOM = "room:general"


@pytest.fixture
def redis_state() -> Iterator[tuple[object, str]]:
    """A real Redis client and a prefix of this test alone; every key under it is deleted afterwards."""
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
def instance(redis_state) -> Callable[[str], RedisTally]:
    """A RedisTally for an instance id on this test's prefix, alive (heartbeat sent)."""
    client, prefix = redis_state

    def make(instance_id: str, *, heartbeat: bool = True) -> RedisTally:
        tally = RedisTally(client, prefix, instance_id)
        if heartbeat:
            tally.heartbeat()
        return tally

    return make


@pytest.fixture(params=["memory", "redis"])
def tally(request):
    if request.param == "memory":
        return MemoryTally()
    return request.getfixturevalue("instance")("solo")


def keys_of(redis_state, instance_id: str) -> list[str]:
    """The Redis keys that hold an instance's entries, scopes or heartbeat."""
    client, prefix = redis_state
    return sorted(
        key
        for key in client.scan_iter(match=f"{prefix}*", count=500)
        if key.endswith(f":{instance_id}")
    )


# -- the contract, for both implementations -----------------------------------------


def test_first_and_last_socket_of_a_member(tally):
    assert tally.add(SCOPE, "1") is True
    assert tally.add(SCOPE, "1") is False  # second socket
    assert tally.add(SCOPE, "1") is False  # third socket
    assert tally.members(SCOPE) == {"1"}
    assert tally.remove(SCOPE, "1") is False
    assert tally.remove(SCOPE, "1") is False
    assert tally.members(SCOPE) == {"1"}  # one socket is still open
    assert tally.remove(SCOPE, "1") is True  # the last one
    assert tally.members(SCOPE) == set()
    assert tally.add(SCOPE, "1") is True  # back again: first again


def test_members_counts_each_member_once_per_scope(tally):
    for member in ("1", "2", "2", "3"):
        tally.add(SCOPE, member)
    tally.add(ROOM, "u:2")
    assert tally.members(SCOPE) == {"1", "2", "3"}
    assert tally.members(ROOM) == {"u:2"}
    assert tally.members("room:empty") == set()
    tally.remove(SCOPE, "3")
    assert tally.members(SCOPE) == {"1", "2"}
    assert tally.members(ROOM) == {"u:2"}  # scopes are independent


def test_removing_what_was_never_added_changes_nothing(tally):
    assert tally.remove(SCOPE, "ghost") is False
    tally.add(SCOPE, "1")
    assert tally.remove(SCOPE, "1") is True
    assert tally.remove(SCOPE, "1") is False  # one remove too many
    assert tally.add(SCOPE, "1") is True
    assert tally.members(SCOPE) == {"1"}


def test_reap_on_a_healthy_tally_forgets_nothing(tally):
    tally.add(SCOPE, "1")
    assert tally.reap() == []
    assert tally.members(SCOPE) == {"1"}


def test_close_withdraws_everything(tally):
    tally.add(SCOPE, "1")
    tally.add(ROOM, "u:1")
    tally.close()
    assert tally.members(SCOPE) == set()
    assert tally.members(ROOM) == set()


# -- Redis: several instances on one prefix -----------------------------------------


def test_a_member_on_two_instances_is_first_once_and_last_once(instance):
    a, b = instance("a"), instance("b")
    assert a.add(SCOPE, "1") is True
    assert b.add(SCOPE, "1") is False  # already present on a
    assert a.add(SCOPE, "1") is False
    assert a.remove(SCOPE, "1") is False
    assert a.remove(SCOPE, "1") is False  # gone from a, still on b
    assert a.members(SCOPE) == {"1"}
    assert b.remove(SCOPE, "1") is True  # the last socket anywhere
    assert a.members(SCOPE) == b.members(SCOPE) == set()


def test_members_is_the_union_over_live_instances(instance):
    a, b = instance("a"), instance("b")
    a.add(SCOPE, "1")
    a.add(SCOPE, "2")
    b.add(SCOPE, "2")
    b.add(SCOPE, "3")
    b.add(ROOM, "u:3")
    assert a.members(SCOPE) == b.members(SCOPE) == {"1", "2", "3"}
    assert a.members(ROOM) == {"u:3"}


def test_a_dead_instance_drops_out_at_once_and_is_reaped_once(redis_state, instance):
    client, prefix = redis_state
    a, b = instance("a"), instance("b")
    a.add(SCOPE, "only-a")
    a.add(SCOPE, "only-a")  # two sockets of it on a
    a.add(SCOPE, "both")
    b.add(SCOPE, "both")
    a.add(ROOM, "u:only-a")
    b.add(SCOPE, "only-b")

    client.delete(f"{prefix}:inst:a")  # a's heartbeat expired: a was killed without a goodbye

    assert b.members(SCOPE) == {"both", "only-b"}  # immediately, before any reaping
    assert b.members(ROOM) == set()
    assert sorted(b.reap()) == [(SCOPE, "only-a"), (ROOM, "u:only-a")]  # not "both": b still has it
    assert keys_of(redis_state, "a") == []  # a's entries, scopes and heartbeat are gone
    assert "a" not in client.smembers(f"{prefix}:instances")
    assert b.reap() == []  # nothing is reported twice
    assert b.members(SCOPE) == {"both", "only-b"}
    assert b.remove(SCOPE, "both") is True  # b held the last socket of "both"
    assert b.add(SCOPE, "only-a") is True  # a's member comes back through b: first again


def test_a_member_of_two_dead_instances_is_reported_gone_once(redis_state, instance):
    client, prefix = redis_state
    a, b, c = instance("a"), instance("b"), instance("c")
    a.add(SCOPE, "1")
    c.add(SCOPE, "1")  # the same user, one socket on a and one on c
    b.add(SCOPE, "2")
    client.delete(f"{prefix}:inst:a", f"{prefix}:inst:c")  # a and c die together

    assert b.members(SCOPE) == {"2"}
    assert b.reap() == [(SCOPE, "1")]  # one pair, not one per dead instance
    assert b.reap() == []
    assert keys_of(redis_state, "a") == keys_of(redis_state, "c") == []


def test_adding_a_member_held_only_by_a_dead_instance_is_a_first(redis_state, instance):
    client, prefix = redis_state
    a, b = instance("a"), instance("b")
    a.add(SCOPE, "1")
    client.delete(f"{prefix}:inst:a")
    assert b.add(SCOPE, "1") is True  # a no longer counts, reaped or not
    assert b.reap() == []  # "1" is present on b: the reaped entry is not reported gone
    assert b.members(SCOPE) == {"1"}


def test_a_restarted_instance_reaps_its_previous_life_before_its_first_heartbeat(redis_state, instance):
    client, prefix = redis_state
    old, b = instance("a"), instance("b")
    old.add(SCOPE, "1")
    old.add(SCOPE, "2")
    old.add(ROOM, "u:1")
    b.add(SCOPE, "2")
    # The process is killed and restarted with the same id within INSTANCE_TTL_S: its old
    # heartbeat key is still alive, so nobody else would reap its entries.
    restarted = instance("a", heartbeat=False)
    assert sorted(restarted.reap()) == [(SCOPE, "1"), (ROOM, "u:1")]  # "2" is still on b
    restarted.heartbeat()
    assert restarted.members(SCOPE) == b.members(SCOPE) == {"2"}  # no ghosts
    assert restarted.members(ROOM) == set()
    assert restarted.add(SCOPE, "1") is True
    assert b.reap() == [] and restarted.reap() == []
    assert b.members(SCOPE) == {"1", "2"}
    assert client.smembers(f"{prefix}:instances") == {"a", "b"}


def test_an_instance_whose_own_heartbeat_expired_restores_its_entries(redis_state, instance):
    client, prefix = redis_state
    a, b = instance("a"), instance("b")
    a.add(SCOPE, "1")
    a.add(SCOPE, "1")
    a.add(ROOM, "u:1")
    client.delete(f"{prefix}:inst:a")  # a stalled longer than INSTANCE_TTL_S
    assert b.members(SCOPE) == set()

    a.heartbeat()  # a is back: its entries come back with it

    assert b.members(SCOPE) == {"1"}
    assert b.members(ROOM) == {"u:1"}
    assert b.reap() == []
    assert b.add(SCOPE, "1") is False  # a holds it again
    assert a.remove(SCOPE, "1") is False
    assert a.remove(SCOPE, "1") is False  # both of a's sockets counted, b still has one
    assert b.remove(SCOPE, "1") is True


def test_an_instance_reaped_by_another_restores_its_entries_on_its_next_heartbeat(redis_state, instance):
    client, prefix = redis_state
    a, b = instance("a"), instance("b")
    a.add(SCOPE, "1")
    a.add(SCOPE, "1")
    a.add(ROOM, "u:1")
    client.delete(f"{prefix}:inst:a")
    assert sorted(b.reap()) == [(SCOPE, "1"), (ROOM, "u:1")]  # b thinks a died
    assert keys_of(redis_state, "a") == []

    a.heartbeat()

    assert b.members(SCOPE) == {"1"}
    assert b.members(ROOM) == {"u:1"}
    assert "a" in client.smembers(f"{prefix}:instances")
    assert a.remove(SCOPE, "1") is False  # both sockets restored, not one
    assert a.remove(SCOPE, "1") is True
    assert b.members(SCOPE) == set()


def test_close_withdraws_the_instance_without_leaving_anything_to_reap(redis_state, instance):
    client, prefix = redis_state
    a, b = instance("a"), instance("b")
    a.add(SCOPE, "1")
    a.add(ROOM, "u:1")
    a.add(SCOPE, "2")
    b.add(SCOPE, "2")
    a.close()
    assert b.members(SCOPE) == {"2"}
    assert b.members(ROOM) == set()
    assert keys_of(redis_state, "a") == []
    assert client.smembers(f"{prefix}:instances") == {"b"}
    assert b.reap() == []
    assert b.remove(SCOPE, "2") is True
