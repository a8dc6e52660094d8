"""Shared live state behind small interfaces: memory for one process, Redis for many.

The services never know which one they have; `build_stores` chooses from the configuration.
"""
from __future__ import annotations

from dataclasses import dataclass

from nexus.config import Config
from nexus.stores.base import PresenceStore, Tally
from nexus.stores.memory import MemoryPresenceStore, MemoryTally


@dataclass
class Stores:
    """The live state of one process, and whether other instances share it."""

    tally: Tally
    presence: PresenceStore
    shared: bool


def build_stores(config: Config) -> Stores:
    """Redis stores when Redis is configured (REDIS_URL, REDIS_HOST, or a redis:// queue), else memory."""
    url = config.shared_state_url
    if url is None:
        return Stores(tally=MemoryTally(), presence=MemoryPresenceStore(), shared=False)
    from nexus.stores.redis import RedisPresenceStore, RedisTally, connect

    client = connect(url)
    prefix = f"{config.queue_channel}:state"
    return Stores(
        tally=RedisTally(client, prefix, config.instance_id),
        presence=RedisPresenceStore(client, prefix),
        shared=True,
    )
