"""Each instance's background upkeep of live state: heartbeat, reaping dead instances, away
after inactivity, last-seen writes and reconciling the database with who is really connected
(both ways, every RECONCILE_S).

One greenlet per instance runs the tasks in turn, and the heartbeat has a greenlet of its own:
a task that waits long (reconciling against a database that stalls, a lock held elsewhere)
must not let this instance's heartbeat key expire, which would make the other instances reap
its live sockets and announce its users offline. Every task is safe when several instances run
it at once (the store operations it relies on are atomic), and a failing task is logged and
retried next time.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from nexus.logs import log_event
from nexus.stores.redis import HEARTBEAT_S

log = logging.getLogger("nexus.keeper")

TICK_S = 1.0
STATS_EVERY_S = 3.0
#: How often the database's presence is compared with the shared store (and repaired): a crash
#: between a decision and its announcement is visible to everyone for at most about this long.
RECONCILE_S = 5.0


@dataclass
class _Task:
    name: str
    every_s: float
    run: Callable[[], Any]
    due: float = 0.0
    failures: int = 0
    logged: bool = False  # this streak of failures has been logged (outages are the tracker's)
    #: Runs on a greenlet of its own, never behind the other tasks.
    alone: bool = False


@dataclass
class Keeper:
    """Runs the upkeep tasks of one instance until stopped."""

    app: Any
    sleep: Callable[[float], Any]
    tasks: list[_Task] = field(default_factory=list)
    stopped: bool = False

    @classmethod
    def for_app(cls, app: Any, sleep: Callable[[float], Any]) -> "Keeper":
        presence = app.extensions["nexus.presence"]
        chat = app.extensions["nexus.chat"]
        tally = presence.tally
        config = app.config["NEXUS"]

        def reap() -> None:
            gone = tally.reap()
            if gone:
                presence.went_offline([int(member) for scope, member in gone if scope == "presence"])
                chat.live.announce_gone([(scope, member) for scope, member in gone if scope != "presence"])

        def heartbeat() -> None:
            back = tally.heartbeat()
            if back:
                presence.back_online([int(member) for scope, member in back if scope == "presence"])

        keeper = cls(app, sleep)
        keeper.tasks = [
            _Task("reap", 2.0, reap),
            _Task("heartbeat", HEARTBEAT_S, heartbeat, alone=True),
            _Task("away", max(0.5, min(5.0, config.away_after_s / 4)), presence.sweep_away),
            _Task("last_seen", float(config.last_seen_write_s), presence.flush_last_seen),
        ]
        def _prune_sequences() -> int:
            from nexus.extensions import socketio

            manager = socketio.server.manager
            sequencer = getattr(manager, "sequencer", None)
            if sequencer is None:
                return 0
            return sequencer.prune(lambda namespace, room: bool(manager.rooms.get(namespace, {}).get(room)))

        def cleanup() -> None:
            from nexus.services.tokens import purge_expired_revocations

            removed = {
                "revoked_tokens": purge_expired_revocations(),
                "typing": chat.typing.sweep(),
                "catch_up_screens": chat.gate.prune(),
                "room_sequences": _prune_sequences(),
            }
            log_event(log, "cleanup", "cleanup removed", **removed)

        keeper.tasks.append(_Task("cleanup", float(config.cleanup_interval_s), cleanup, due=time.monotonic() + 60))
        admin = app.extensions.get("nexus.admin")
        relay = app.extensions["nexus.broadcaster"].outbox
        if relay is not None:  # events committed here or elsewhere but never published
            keeper.tasks.append(_Task("outbox", min(1.0, relay.stale_s / 2), relay.sweep))
        keeper.tasks.append(_Task("stats", STATS_EVERY_S, admin.publish_stats if admin else app.extensions["nexus.stats"].publish))
        stores = app.extensions["nexus.stores"]
        if stores.shared or not config.message_queue_url:
            keeper.tasks.append(_Task("reconcile", RECONCILE_S, presence.reconcile))
        else:
            # Instances on a queue without Redis see only their own sockets: none may
            # overrule the others' users in the database.
            log.warning(
                "MESSAGE_QUEUE_URL is set but no Redis (REDIS_URL): presence and live room members "
                "are per instance; set REDIS_URL to share them"
            )
        return keeper

    def run_once(self, force: bool = False, alone: bool = False) -> None:
        """Run the tasks that are due (all of them with force, the shared loop's and those that run
        alone); without force, those of the shared loop, or with `alone` those that run alone."""
        now = time.monotonic()
        for task in self.tasks:
            if not force and (task.alone != alone or now < task.due):
                continue
            self._run(task, now)

    def _run(self, task: _Task, now: float) -> None:
        task.due = now + task.every_s
        try:
            with self.app.app_context():
                task.run()
        except Exception as exc:
            tracker = self.app.extensions.get("nexus.outages")
            if tracker is not None and tracker.refuse(exc) is not None:
                pass  # the database or Redis is down: the tracker logs that once, and its end
            # A traceback for the first failure of a streak; one line for the ones after.
            elif not task.logged:
                log.exception("upkeep task %s failed; retrying every %.0fs", task.name, task.every_s)
                task.logged = True
            elif task.failures % 60 == 0:
                log.warning("upkeep task %s still failing (%d times): %s", task.name, task.failures, exc)
            task.failures += 1
        else:
            if task.logged:
                log.info("upkeep task %s works again after %d failures", task.name, task.failures)
            task.failures = 0
            task.logged = False

    def run(self) -> None:
        """The shared loop: every task but those that run alone, in turn."""
        while not self.stopped:
            self.sleep(TICK_S)
            self.run_once()

    def run_alone(self) -> None:
        """The loop of the tasks that run alone (the heartbeat), woken at their own times."""
        while not self.stopped:
            due = min((task.due for task in self.tasks if task.alone), default=None)
            if due is None:
                return
            self.sleep(min(TICK_S, max(0.0, due - time.monotonic())))
            self.run_once(alone=True)

    def stop(self) -> None:
        self.stopped = True


def start(app: Any, socketio: Any) -> Keeper:
    """Bring this instance's live state up to date now, then keep it so in the background."""
    keeper = Keeper.for_app(app, socketio.sleep)
    keeper.run_once(force=True)  # reaps a previous life of this instance before it serves
    socketio.start_background_task(keeper.run)
    socketio.start_background_task(keeper.run_alone)
    app.extensions["nexus.keeper"] = keeper
    return keeper
