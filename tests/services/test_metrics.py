"""Rates of one instance and the stats board every instance posts to."""
from __future__ import annotations

import uuid

import pytest

from nexus.services.metrics import RateCounter, aggregate, memory_rss_bytes
from nexus.stores.memory import MemoryStatsBoard
from tests.support import services


def test_rate_counter_counts_whole_seconds_of_its_window():
    now = [100.0]
    counter = RateCounter(clock=lambda: now[0], window_s=10)
    counter.add(5)
    assert counter.per_second() == 0  # the current second is still filling
    now[0] = 101.2
    counter.add(15)
    now[0] = 102.0
    assert counter.per_second() == 2.0 and counter.total == 20
    now[0] = 120.0  # everything has left the window
    assert counter.per_second() == 0 and counter.total == 20


def test_aggregate_sums_per_instance_figures_and_keeps_shared_ones_once():
    totals = aggregate(
        [
            {"connections": 3, "usersOnline": 4, "rooms": 2, "messagesPerSecond": 1.5, "errorsPerSecond": 0},
            {"connections": 5, "usersOnline": 4, "rooms": 2, "messagesPerSecond": 0.25, "errorsPerSecond": 1},
        ]
    )
    assert totals == {
        "connections": 8, "totalConnections": 0, "usersOnline": 4, "rooms": 2, "messagesPerSecond": 1.75,
        "errorsPerSecond": 1, "instances": 2,
    }
    assert memory_rss_bytes() > 10 * 1024 * 1024


@pytest.fixture(params=["memory", "redis"])
def board(request):
    if request.param == "memory":
        yield MemoryStatsBoard()
        return
    services.require("redis")
    from nexus.stores.redis import RedisStatsBoard, connect

    client = connect(services.REDIS_URL)
    prefix = f"nexus-test-{uuid.uuid4().hex}"
    yield RedisStatsBoard(client, prefix)
    client.delete(f"{prefix}:stats")
    client.close()


def test_the_board_lists_the_latest_stats_of_each_instance(board):
    board.publish("a", {"instanceId": "a", "connections": 1})
    board.publish("b", {"instanceId": "b", "connections": 2})
    board.publish("a", {"instanceId": "a", "connections": 3})
    assert sorted(board.all(), key=lambda s: s["instanceId"]) == [
        {"instanceId": "a", "connections": 3},
        {"instanceId": "b", "connections": 2},
    ]


def test_stale_or_corrupt_entries_are_dropped_from_the_redis_board():
    services.require("redis")
    import json
    import time

    from nexus.stores.redis import RedisStatsBoard, connect

    client = connect(services.REDIS_URL)
    prefix = f"nexus-test-{uuid.uuid4().hex}"
    board = RedisStatsBoard(client, prefix)
    try:
        board.publish("live", {"instanceId": "live"})
        client.hset(board.key, "dead", json.dumps({"at": time.time() - 3600, "stats": {"instanceId": "dead"}}))
        client.hset(board.key, "junk", "not json")
        assert board.all() == [{"instanceId": "live"}]
        assert set(client.hkeys(board.key)) == {"live"}
    finally:
        client.delete(board.key)
        client.close()
