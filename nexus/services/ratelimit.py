"""Rate limits of Socket.IO events, per user (per client address for guests), never per socket:
reconnecting or opening more sockets neither resets nor multiplies the allowance. The counters
live in the `limits` library's storage: memory for one process, Redis shared by every instance.
While Redis is down the limits hold per process, in memory, until Redis answers again."""
from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any
from threading import Lock

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from nexus.config import Config
from nexus.outages import REDIS, Outages, dependency_of

log = logging.getLogger("nexus.ratelimit")


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: Any) -> None:
        return None


_NO_LOCK = _NoLock()


def _cooperative() -> bool:
    """True in a gevent server (threads are greenlets): no switch can happen inside a counter update."""
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("threading")


class SweptMemoryStorage(MemoryStorage):
    """The `limits` memory storage, with its clean-up of expired counters run at most once a second,
    by the event that finds it due.

    The library's own schedules it 10 ms after any write, on a new timer thread each time, and the
    clean-up walks every key: with thousands of users that was most of an event's cost. Reads
    already ignore an expired counter (MemoryStorage.get checks the expiry), so running the
    clean-up later only keeps memory a little longer.
    """

    SWEEP_EVERY_S = 1.0

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.timer.cancel()
        self._next_sweep = time.monotonic() + self.SWEEP_EVERY_S
        if _cooperative():
            # Greenlets switch only where they wait, and a counter update never waits: the
            # per-key locks (gevent's Python-level RLock under monkey-patching) guard nothing here.
            self.locks = defaultdict(lambda: _NO_LOCK)

    def _MemoryStorage__schedule_expiry(self) -> None:  # replaces MemoryStorage.__schedule_expiry
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_EVERY_S
            self._MemoryStorage__expire_events()


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check: allowed, or refused with when to retry."""

    allowed: bool
    retry_after_ms: int = 0
    notify: bool = False  # the first refusal of this key in this window: tell the client once
    cut_off: bool = False  # this socket kept going long after being refused: disconnect it


class EventLimiter:
    """SOCKETIO_RATE_LIMIT_MAX_REQUESTS cost units per SOCKETIO_RATE_LIMIT_WINDOW_MS, per key."""

    #: While the shared storage is down, one event at most this often tries it again (seconds).
    RETRY_SHARED_EVERY_S = 2.0

    def __init__(self, config: Config, outages: Outages | None = None):
        uri = config.shared_state_url
        if uri:
            from nexus.stores.sentinel import limits_storage

            uri, options = limits_storage(uri)
            self.storage = storage_from_string(uri, key_prefix=f"{config.queue_channel}:ratelimit", **options)
        else:
            self.storage = SweptMemoryStorage()
        # A sliding window counter: two counters per key, O(1) per event whatever the limit (a moving
        # window keeps one timestamp per unit, so a large limit made every check slower).
        self.shared = SlidingWindowCounterRateLimiter(self.storage)
        self.strategy = self.shared
        # Where the counting goes while the shared storage is down: this process's memory.
        self.fallback = SlidingWindowCounterRateLimiter(SweptMemoryStorage()) if uri else None
        self.outages = outages
        self._retry_shared_at = 0.0
        self.window_s = max(1, math.ceil(config.rate_limit_window_ms / 1000))
        self.item = RateLimitItemPerSecond(config.rate_limit_max_requests, self.window_s)
        # A socket refused this many times within a window is disconnected.
        self.cut_off_after = max(10, config.rate_limit_max_requests)
        self._lock = Lock()
        self._notified: dict[str, float] = {}
        self._refused: dict[str, tuple[float, int]] = {}

    def check(self, key: str, sid: str, cost: int) -> Verdict:
        """Spend `cost` units of the key's allowance, or refuse. While the shared storage is down, the
        allowance is counted in this process's memory."""
        if cost <= 0:
            return Verdict(True)
        strategy = self.strategy
        if strategy is not self.shared and time.monotonic() >= self._retry_shared_at:
            strategy = self.shared  # Redis may be back: this event finds out
        try:
            allowed = strategy.hit(self.item, key, cost=cost)
            stats = None if allowed else strategy.get_window_stats(self.item, key)
        except Exception as exc:
            if strategy is not self.shared or self.fallback is None:
                raise
            # Redis is down: count in this process's memory rather than refuse everyone or no one.
            self._storage_failed(exc)
            strategy = self.fallback
            allowed = strategy.hit(self.item, key, cost=cost)
            stats = None if allowed else strategy.get_window_stats(self.item, key)
        else:
            if strategy is self.shared and self.strategy is not self.shared:
                log.debug("rate-limit storage answers again; events are limited across instances again")
                self.strategy = self.shared
        if allowed:
            return Verdict(True)
        now = time.time()
        retry_ms = max(1, int((stats.reset_time - now) * 1000))
        with self._lock:
            notify = self._notified.get(key, 0.0) <= now
            if notify:
                self._notified[key] = now + self.window_s
            started, count = self._refused.get(sid, (now, 0))
            if now - started > self.window_s:
                started, count = now, 0
            self._refused[sid] = (started, count + 1)
            self._prune(now)
        return Verdict(False, retry_ms, notify=notify, cut_off=count + 1 > self.cut_off_after)

    def _storage_failed(self, exc: Exception) -> None:
        self._retry_shared_at = time.monotonic() + self.RETRY_SHARED_EVERY_S
        if self.strategy is self.shared:
            self.strategy = self.fallback
            if dependency_of(exc) == REDIS and self.outages is not None:
                self.outages.report(REDIS, exc)  # one line for the outage, whoever notices it first
            else:
                log.warning("rate-limit storage unavailable (%s: %s); events are limited per instance meanwhile",
                            type(exc).__name__, exc)

    def forget_socket(self, sid: str) -> None:
        with self._lock:
            self._refused.pop(sid, None)

    def _prune(self, now: float) -> None:
        if len(self._notified) > 10_000:
            self._notified = {key: until for key, until in self._notified.items() if until > now}
        if len(self._refused) > 10_000:
            self._refused = {
                sid: entry for sid, entry in self._refused.items() if now - entry[0] <= self.window_s
            }


def rate_key(user_id: int | None, remote_addr: str | None) -> str:
    """Users by id; guests by client address."""
    return f"u:{user_id}" if user_id is not None else f"ip:{remote_addr or 'unknown'}"
