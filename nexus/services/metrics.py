"""Counters of this instance (messages and errors per second, connections) and the stats every
instance publishes for the others, so that an admin on any instance sees them all."""
from __future__ import annotations

import os
import resource
import time
from collections import deque
from threading import Lock
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from nexus.logs import CLIENT_MISTAKES, ClientMistakes

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


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """What this instance counts: rates for the dashboard, Prometheus series for operators.

    Each app has its own Prometheus registry (tests build many apps in one process).
    """

    def __init__(self) -> None:
        self.started = time.time()
        self.messages = RateCounter()
        self.errors = RateCounter()
        self.connections_total = 0
        self.registry = CollectorRegistry(auto_describe=True)
        labelled = {"registry": self.registry}
        self.events_received = Counter("nexus_events_received", "Socket.IO events received", ["event"], **labelled)
        self.events_emitted = Counter("nexus_events_emitted", "Events emitted to rooms or sockets", ["event"],
                                      **labelled)
        self.event_seconds = Histogram("nexus_event_handling_seconds", "Time to handle one event", ["event"],
                                       buckets=LATENCY_BUCKETS, **labelled)
        self.messages_stored = Counter("nexus_messages_stored", "Chat messages stored", **labelled)
        self.rate_limited = Counter("nexus_rate_limit_rejections", "Events refused by the rate limit", ["event"],
                                    **labelled)
        self.errors_by_code = Counter("nexus_errors", "Errors answered to clients, by code", ["code"], **labelled)
        self.queue_publish_failures = Counter("nexus_queue_publish_failures", "Failed message-queue publishes",
                                              **labelled)
        self.connections_opened = Counter("nexus_connections_opened", "Socket.IO connections accepted", **labelled)
        # Counted where they are logged (nexus.logs), for the whole process.
        self.registry.register(_ClientMistakesCollector(CLIENT_MISTAKES))
        # Event names are the namespaces' handlers plus "unknown": bounded, so the caches are too.
        self._received: dict[str, Any] = {}
        self._handled: dict[str, Any] = {}
        self._emitted: dict[str, Any] = {}

    def received(self, event: str) -> None:
        """An event arrived (the hot path: label children are looked up once per event name)."""
        _child(self._received, self.events_received, event).inc()

    def handled(self, event: str, seconds: float) -> None:
        _child(self._handled, self.event_seconds, event).observe(seconds)

    def emitted(self, event: str) -> None:
        _child(self._emitted, self.events_emitted, event).inc()

    def uptime_s(self) -> float:
        return round(time.time() - self.started, 1)

    def connected(self) -> None:
        self.connections_total += 1
        self.connections_opened.inc()

    def message_stored(self) -> None:
        self.messages.add()
        self.messages_stored.inc()

    def error(self, code: str) -> None:
        self.errors.add()
        self.errors_by_code.labels(code).inc()

    def watch_connections(self, sessions: Any, server: Any) -> None:
        """Export the open connections by namespace and transport, counted when scraped."""
        self.registry.register(_ConnectionsCollector(sessions, server))


class _ConnectionsCollector:
    """nexus_connections{namespace, transport}, from the session registry at scrape time."""

    def __init__(self, sessions: Any, server: Any):
        self.sessions = sessions
        self.server = server

    def describe(self) -> list:
        return []

    def collect(self):  # noqa: ANN201 - prometheus_client's collector protocol
        family = GaugeMetricFamily("nexus_connections", "Open Socket.IO connections", labels=["namespace", "transport"])
        counts: dict[tuple[str, str], int] = {}
        for session in self.sessions:
            try:
                transport = self.server.transport(session.sid, session.namespace)
            except Exception:  # gone meanwhile
                continue
            key = (session.namespace, transport)
            counts[key] = counts.get(key, 0) + 1
        for (namespace, transport), count in sorted(counts.items()):
            family.add_metric([namespace, transport], count)
        yield family


class _ClientMistakesCollector:
    """nexus_client_errors_total{kind}: requests refused for a client's mistake (unknown session,
    transport or origin, ...), from the process-wide tally at scrape time."""

    def __init__(self, mistakes: ClientMistakes):
        self.mistakes = mistakes

    def describe(self) -> list:
        return []

    def collect(self):  # noqa: ANN201 - prometheus_client's collector protocol
        family = CounterMetricFamily("nexus_client_errors", "Requests refused for a client's mistake, by kind",
                                     labels=["kind"])
        for kind, count in sorted(self.mistakes.counts().items()):
            family.add_metric([kind], count)
        yield family


def _child(cache: dict[str, Any], metric: Any, label: str) -> Any:
    """A labelled metric's child, cached (prometheus_client's labels() takes a lock and builds a key)."""
    child = cache.get(label)
    if child is None:
        child = cache[label] = metric.labels(label)
    return child


def memory_rss_bytes() -> int:
    """Resident memory of this process (current on Linux, peak elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def aggregate(instances: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the stats of every live instance."""
    keys = ("connections", "totalConnections", "usersOnline", "messagesPerSecond", "errorsPerSecond")
    totals: dict[str, Any] = {key: 0 for key in keys}
    for stats in instances:
        totals["connections"] += stats.get("connections", 0)
        totals["totalConnections"] += stats.get("totalConnections", 0)
        totals["messagesPerSecond"] += stats.get("messagesPerSecond", 0)
        totals["errorsPerSecond"] += stats.get("errorsPerSecond", 0)
    # Users online and rooms are shared state: every instance reports the same cluster-wide figure.
    totals["usersOnline"] = max((stats.get("usersOnline", 0) for stats in instances), default=0)
    totals["rooms"] = max((stats.get("rooms", 0) for stats in instances), default=0)
    totals["messagesPerSecond"] = round(totals["messagesPerSecond"], 2)
    totals["errorsPerSecond"] = round(totals["errorsPerSecond"], 2)
    totals["instances"] = len(instances)
    return totals
