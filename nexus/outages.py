"""Outages of the database and of Redis: told apart from bugs, answered UNAVAILABLE (503) with a
retry hint, and logged once when they start and once when they end.

`dependency_of(exc)` names the dependency an exception says is unreachable, or None for anything
else (a bug stays an INTERNAL_ERROR with a reference). `Outages.report` records a failure: the
first one of an outage logs a line and starts a watcher that probes the dependency until it
answers again, then logs the recovery. Requests in between are refused without a log line each.
"""
from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from nexus.errors import NexusError

log = logging.getLogger("nexus.outages")

DATABASE = "database"
REDIS = "redis"

#: The retry hint given with every UNAVAILABLE answer (milliseconds).
RETRY_AFTER_MS = 2000
#: How often a watcher probes a dependency that is down (seconds).
PROBE_EVERY_S = 0.5
#: Without a probe, an outage is over once no failure has been reported for this long (seconds).
QUIET_S = 5.0
#: Failures this soon after a recovery (requests that were already under way, a server still
#: settling) belong to the outage that just ended: a new outage is logged only if it lasts longer.
SETTLE_S = 2.0

_MESSAGES = {
    DATABASE: "The database is unavailable; try again shortly.",
    REDIS: "Shared state (Redis) is unavailable; try again shortly.",
}

# SQLite's errors that pass (another writer, a busy disk); its other OperationalErrors are bugs.
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "database is busy", "disk i/o error",
                     "unable to open database file")


def dependency_of(exc: BaseException | None) -> str | None:
    """DATABASE or REDIS when `exc` (or what caused it) says that dependency is unreachable, else None."""
    seen = 0
    while exc is not None and seen < 6:
        found = _classify(exc)
        if found is not None:
            return found
        seen += 1
        exc = exc.__cause__ or exc.__context__
    return None


def _classify(exc: BaseException) -> str | None:
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, (sa_exc.DisconnectionError, sa_exc.TimeoutError)):  # TimeoutError: the pool's wait
        return DATABASE
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return DATABASE
        if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return _dbapi(exc.orig) if exc.orig is not None else DATABASE
        return None
    if _is_redis_outage(exc):
        return REDIS
    return _dbapi(exc)


def _dbapi(error: BaseException) -> str | None:
    if isinstance(error, sqlite3.OperationalError):
        text = str(error).lower()
        return DATABASE if any(marker in text for marker in _SQLITE_TRANSIENT) else None
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return None
    # psycopg's OperationalError covers lost connections, refused ones, a server shutting down or
    # starting up, cancelled statements and serialization conflicts: all pass, none is a bug.
    if isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError)):
        return DATABASE
    return None


def _is_redis_outage(exc: BaseException) -> bool:
    try:
        from redis import exceptions as redis_exc
    except ImportError:  # pragma: no cover - redis is a dependency
        return False
    # ConnectionError covers a refused connection, a dropped one and a Redis still loading its data;
    # ReadOnlyError is a replica answering while a failover promotes another.
    return isinstance(exc, (redis_exc.ConnectionError, redis_exc.TimeoutError, redis_exc.ReadOnlyError))


def unavailable(dependency: str) -> NexusError:
    """The UNAVAILABLE error a client sees while `dependency` is down, with its retry hint."""
    return NexusError("UNAVAILABLE", _MESSAGES.get(dependency), retry_after_ms=RETRY_AFTER_MS)


_RETRY_AFTER_KEY = "nexus_retry_after"


def retry_after_header(error: NexusError) -> dict[str, str]:
    """`Retry-After` (whole seconds, at least 1) for an error that carries a retry hint; remembered
    for the request, so that `keep_retry_after` puts it back if another extension rewrote it."""
    if error.retry_after_ms is None:
        return {}
    value = str(max(1, math.ceil(error.retry_after_ms / 1000)))
    from flask import g, has_request_context

    if has_request_context():
        setattr(g, _RETRY_AFTER_KEY, value)
    return {"Retry-After": value}


def keep_retry_after(response: Any) -> Any:
    """An after-request hook: Flask-Limiter sets Retry-After to the end of the rate-limit window on
    every response; an UNAVAILABLE answer keeps its own, short, hint."""
    from flask import g

    value = g.pop(_RETRY_AFTER_KEY, None)
    if value is not None:
        response.headers["Retry-After"] = value
    return response


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else ""
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:200]


@dataclass
class _State:
    since: float
    refused: int = 0
    last_failure: float = field(default_factory=time.monotonic)
    quiet: bool = False  # a blip right after a recovery, not logged unless it lasts
    first_error: str = ""


class Outages:
    """The dependencies of one process that are down now; one log line when each outage starts and
    one when it ends, found by a watcher that probes the dependency."""

    def __init__(self, probes: dict[str, Callable[[], Any]] | None = None,
                 spawn: Callable[[Callable[[], None]], Any] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.probes = dict(probes or {})
        self._spawn = spawn or _thread
        self._sleep = sleep
        self._lock = threading.Lock()
        self._down: dict[str, _State] = {}
        self._recovered_at: dict[str, float] = {}

    def down(self) -> list[str]:
        """The dependencies that are down now."""
        with self._lock:
            return sorted(self._down)

    def report(self, dependency: str, exc: BaseException | None = None, *, what: str = "no answer") -> None:
        """A request failed because `dependency` is unreachable: log the outage if it is new."""
        now = time.monotonic()
        with self._lock:
            state = self._down.get(dependency)
            if state is not None:
                state.refused += 1
                state.last_failure = now
                return
            quiet = now - self._recovered_at.get(dependency, -SETTLE_S) < SETTLE_S
            state = self._down[dependency] = _State(
                since=now, refused=1, last_failure=now, quiet=quiet,
                first_error=_describe(exc) if exc is not None else what,
            )
        if not quiet:
            self._log_start(dependency, state)
        self._spawn(lambda: self._watch(dependency))

    def _log_start(self, dependency: str, state: _State) -> None:
        log.warning("%s unavailable (%s); answering UNAVAILABLE until it is back", dependency, state.first_error)

    def refuse(self, exc: BaseException) -> NexusError | None:
        """The UNAVAILABLE error for an exception that is an outage (reported), or None for anything else."""
        dependency = dependency_of(exc)
        if dependency is None:
            return None
        self.report(dependency, exc)
        return unavailable(dependency)

    def _watch(self, dependency: str) -> None:
        probe = self.probes.get(dependency)
        while True:
            self._sleep(PROBE_EVERY_S)
            with self._lock:
                state = self._down.get(dependency)
            if state is None:
                return
            if state.quiet and time.monotonic() - state.since >= SETTLE_S:
                state.quiet = False  # not a blip after all: a new outage
                self._log_start(dependency, state)
            if probe is None:
                if time.monotonic() - state.last_failure < QUIET_S:
                    continue
            else:
                try:
                    probe()
                except Exception:  # still down: the start line said so already
                    continue
            with self._lock:
                state = self._down.pop(dependency, None)
                self._recovered_at[dependency] = time.monotonic()
            if state is not None and not state.quiet:
                log.warning("%s available again after %.1f s (%d requests answered UNAVAILABLE meanwhile)",
                            dependency, time.monotonic() - state.since, state.refused)
            elif state is not None:
                log.debug("%s: %d requests refused while it settled after its return", dependency, state.refused)
            return


def _thread(target: Callable[[], None]) -> Any:
    # A greenlet where gevent has patched threading, as in the server.
    thread = threading.Thread(target=target, name="nexus-outage-watch", daemon=True)
    thread.start()
    return thread


def install(app: Any) -> Outages:
    """The app's outage tracker, with probes of its database and of its Redis (when it has one)."""
    from sqlalchemy import text

    from nexus.extensions import db

    def probe_database() -> None:
        with app.app_context():
            with db.engine.connect() as connection:
                connection.execute(text("SELECT 1"))

    probes: dict[str, Callable[[], Any]] = {DATABASE: probe_database}
    client = getattr(app.extensions.get("nexus.stores"), "client", None)
    if client is not None:
        probes[REDIS] = client.ping
    outages = Outages(probes)
    app.extensions["nexus.outages"] = outages

    # Runs before Flask-SQLAlchemy's own teardown (registered earlier, called later): ending the
    # session rolls back, and on a connection that died with the server that raises, which would
    # turn a request already answered into a bare 500 of the WSGI server.
    @app.teardown_appcontext
    def _end_session(_exc: BaseException | None) -> None:
        try:
            db.session.remove()
        except Exception as exc:
            if outages.refuse(exc) is None:
                raise
            _invalidate(db.session)
            db.session.registry.clear()

    limiter_log = logging.getLogger("flask-limiter")
    if not any(isinstance(existing, _LimiterOutageFilter) for existing in limiter_log.filters):
        limiter_log.addFilter(_LimiterOutageFilter())
    return outages


class _LimiterOutageFilter(logging.Filter):
    """Flask-Limiter counts in memory while its Redis is down, and says so in lines of its own (with a
    traceback when a request meets the outage halfway). The outage tracker already logs the outage
    once and its end once: those lines go to it instead."""

    _FALLBACK = "Rate limit storage unreachable"
    _RECOVERED = "Rate limit storage recovered"

    def filter(self, record: logging.LogRecord) -> bool:
        outages = tracker()
        if outages is None:
            return True
        error = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        if error is not None and dependency_of(error) is not None:
            outages.report(dependency_of(error) or REDIS, error)
            return False
        if message.startswith(self._FALLBACK):
            outages.report(REDIS, what="the HTTP rate limits' storage is unreachable")
            return False
        if message.startswith(self._RECOVERED):
            return False  # the tracker's watcher reports the end
        return True


def rollback(session: Any) -> None:
    """Roll a database session back after a failure. On a connection that died with the server the
    rollback itself fails: the connection is then dropped (the pool opens a new one), not raised."""
    try:
        session.rollback()
    except Exception as exc:
        if refuse(exc) is None:
            raise
        _invalidate(session)


def _invalidate(session: Any) -> None:
    try:
        session.invalidate()  # drop the dead connection instead of returning it to the pool
    except Exception:  # nothing more can be done with it; the pool replaces it
        pass


def tracker() -> Outages | None:
    """The current app's tracker (None outside an app context, or in an app built without one)."""
    from flask import current_app, has_app_context

    if not has_app_context():
        return None
    return current_app.extensions.get("nexus.outages")


def refuse(exc: BaseException) -> NexusError | None:
    """UNAVAILABLE for an outage (reported to the current app's tracker), None for anything else."""
    outages = tracker()
    if outages is not None:
        return outages.refuse(exc)
    dependency = dependency_of(exc)
    return unavailable(dependency) if dependency is not None else None
