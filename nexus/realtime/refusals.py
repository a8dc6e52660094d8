"""Events refused with an error ack (rate limit, validation, ...), summarised in the log: at most one
line per connection per interval, whatever the client sends. Each refusal is counted in the metrics
(`nexus_errors{code}`, and `nexus_rate_limit_rejections{event}` for the rate limit) by the namespace."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from threading import Lock
from typing import Callable

from nexus.logs import log_event

log = logging.getLogger("nexus.realtime")

#: Seconds between two summary lines of one connection.
SUMMARY_INTERVAL_S = 10.0
#: Codes logged where they happen (a server fault with its reference, an outage once): not summarised here.
LOGGED_ELSEWHERE = frozenset({"INTERNAL_ERROR", "UNAVAILABLE"})
# Distinct event names kept per connection and line; the rest are counted under "other".
_MAX_EVENT_NAMES = 8


@dataclass
class _Tally:
    user: str
    started: float
    next_line_at: float
    total: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    cut_off: bool = False


class RefusalLog:
    """Per connection of one namespace: refusals counted since the last line, a line when the interval
    is over (at the next refusal, a sweep, or when the connection closes)."""

    def __init__(self, namespace: str, *, interval_s: float = SUMMARY_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self.namespace = namespace
        self.interval_s = interval_s
        self.clock = clock
        self._tallies: dict[str, _Tally] = {}
        self._lock = Lock()
        self._next_sweep = 0.0

    def refused(self, sid: str, user: str, code: str, event: str) -> None:
        """Count one refused event of a connection; log the connection's summary when its interval is over."""
        if code in LOGGED_ELSEWHERE:
            return
        now = self.clock()
        lines: list[tuple[str, _Tally, float]] = []
        with self._lock:
            tally = self._tallies.get(sid)
            if tally is None:
                # The first refusal of a connection is reported at once; later ones wait for the interval.
                tally = self._tallies[sid] = _Tally(user=user, started=now, next_line_at=now)
            tally.user = user or tally.user
            tally.total += 1
            tally.codes[code] = tally.codes.get(code, 0) + 1
            name = event if event in tally.events or len(tally.events) < _MAX_EVENT_NAMES else "other"
            tally.events[name] = tally.events.get(name, 0) + 1
            if now >= tally.next_line_at:
                lines.append((sid, tally, now))
                self._tallies[sid] = _Tally(user=user, started=now, next_line_at=now + self.interval_s,
                                            cut_off=tally.cut_off)
            if now >= self._next_sweep:
                self._next_sweep = now + self.interval_s
                lines.extend(self._take_due(now, skip=sid))
        for line in lines:
            self._write(*line)

    def first_cut_off(self, sid: str) -> bool:
        """True the first time a connection is to be cut off for flooding (then the caller logs and
        disconnects it once, however many events were already on their way)."""
        with self._lock:
            tally = self._tallies.get(sid)
            if tally is None:
                now = self.clock()
                tally = self._tallies[sid] = _Tally(user="", started=now, next_line_at=now)
            if tally.cut_off:
                return False
            tally.cut_off = True
            return True

    def closed(self, sid: str) -> None:
        """The connection is gone: report what it had not been told about yet, and forget it."""
        with self._lock:
            tally = self._tallies.pop(sid, None)
        if tally is not None and tally.total:
            self._write(sid, tally, self.clock())

    def sweep(self) -> None:
        """Report every connection whose interval is over and that has refusals not yet logged."""
        now = self.clock()
        with self._lock:
            lines = self._take_due(now)
        for line in lines:
            self._write(*line)

    def _take_due(self, now: float, skip: str | None = None) -> list[tuple[str, _Tally, float]]:
        due = []
        for sid, tally in list(self._tallies.items()):
            if sid == skip or now < tally.next_line_at:
                continue
            if tally.total:
                due.append((sid, tally, now))
                self._tallies[sid] = _Tally(user=tally.user, started=now, next_line_at=now + self.interval_s,
                                            cut_off=tally.cut_off)
            elif now - tally.next_line_at > self.interval_s:
                # Quiet for a whole interval: forget it (the next refusal is reported at once again).
                if not tally.cut_off:
                    del self._tallies[sid]
        return due

    def _write(self, sid: str, tally: _Tally, now: float) -> None:
        noun = "event" if tally.total == 1 else "events"
        log_event(log, "events_refused",
                  "refused {total} " + noun + " in the last {seconds:.1f} s ns={ns} sid={sid} user={user}: {codes} "
                  "(events: {events})",
                  total=tally.total, seconds=round(max(0.0, now - tally.started), 3), ns=self.namespace, sid=sid,
                  user=tally.user or "guest", codes=dict(sorted(tally.codes.items())),
                  events=dict(sorted(tally.events.items())))
