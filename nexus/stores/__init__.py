"""Shared live state behind small interfaces: memory for one process, Redis for many.

The services never know which one they have; `build_stores` chooses from the configuration.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nexus.config import Config
from nexus.stores.base import PresenceStore, StatsBoard, Tally
from nexus.stores.memory import MemoryPresenceStore, MemoryStatsBoard, MemoryTally


@dataclass
class Stores:
    """The live state of one process, and whether other instances share it."""

    tally: Tally
    presence: PresenceStore
    stats: StatsBoard
    shared: bool
    client: Any = None  # the Redis client, when shared


def build_stores(config: Config) -> Stores:
    """Redis stores when Redis is configured (REDIS_URL, REDIS_HOST, or a redis:// queue), else memory."""
    url = config.shared_state_url
    if url is None:
        return Stores(tally=MemoryTally(), presence=MemoryPresenceStore(), stats=MemoryStatsBoard(), shared=False)
    from nexus.stores.redis import RedisPresenceStore, RedisStatsBoard, RedisTally, connect

    client = connect(url)
    prefix = f"{config.queue_channel}:state"
    return Stores(
        tally=RedisTally(client, prefix, config.instance_id),
        presence=RedisPresenceStore(client, prefix),
        stats=RedisStatsBoard(client, prefix),
        shared=True,
        client=client,
    )
