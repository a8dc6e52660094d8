"""Counters of this instance (messages and errors per second, connections) and the stats every
instance publishes for the others, so that an admin on any instance sees them all."""
from __future__ import annotations

import os
import resource
import time
from collections import deque
from threading import Lock
from typing import Any, Callable

WINDOW_S = 10


class RateCounter:
    """Events per second over the last WINDOW_S seconds, and the total since start."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, window_s: int = WINDOW_S):
        self.clock = clock
        self.window_s = window_s
        self.total = 0
        self._lock = Lock()
        self._buckets: deque[list[float]] = deque()  # [second, count]

    def add(self, count: int = 1) -> None:
        second = int(self.clock())
        with self._lock:
            self.total += count
            if self._buckets and self._buckets[-1][0] == second:
                self._buckets[-1][1] += count
            else:
                self._buckets.append([second, count])
            self._trim(second)

    def per_second(self) -> float:
        second = int(self.clock())
        with self._lock:
            self._trim(second)
            # Whole seconds only: the current one is still filling up.
            done = sum(count for at, count in self._buckets if at < second)
        return round(done / self.window_s, 2)

    def _trim(self, second: int) -> None:
        while self._buckets and self._buckets[0][0] <= second - self.window_s - 1:
            self._buckets.popleft()


class Metrics:
    """What this instance counts."""

    def __init__(self) -> None:
        self.started = time.time()
        self.messages = RateCounter()
        self.errors = RateCounter()
        self.connections_total = 0

    def uptime_s(self) -> float:
        return round(time.time() - self.started, 1)


def memory_rss_bytes() -> int:
    """Resident memory of this process (current on Linux, peak elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def aggregate(instances: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the stats of every live instance."""
    keys = ("connections", "usersOnline", "messagesPerSecond", "errorsPerSecond")
    totals: dict[str, Any] = {key: 0 for key in keys}
    for stats in instances:
        totals["connections"] += stats.get("connections", 0)
        totals["messagesPerSecond"] += stats.get("messagesPerSecond", 0)
        totals["errorsPerSecond"] += stats.get("errorsPerSecond", 0)
    # Users online and rooms are shared state: every instance reports the same cluster-wide figure.
    totals["usersOnline"] = max((stats.get("usersOnline", 0) for stats in instances), default=0)
    totals["rooms"] = max((stats.get("rooms", 0) for stats in instances), default=0)
    totals["messagesPerSecond"] = round(totals["messagesPerSecond"], 2)
    totals["errorsPerSecond"] = round(totals["errorsPerSecond"], 2)
    totals["instances"] = len(instances)
    return totals
