"""MemoryPresenceStore and RedisPresenceStore keep the same presence details the same way."""
from __future__ import annotations

import time
from typing import Iterator
from uuid import uuid4

import pytest

from nexus.stores.memory import MemoryPresenceStore
from nexus.stores.redis import RedisPresenceStore, connect
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
