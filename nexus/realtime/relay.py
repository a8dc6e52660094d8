"""The outbox relay: events recorded in the database with their change, published at least once.

With a message queue, an event that reports a stored message is written to the `outbox` table
in the same transaction as the message (see nexus.realtime.broadcast). After the commit the
instance publishes it and, once the broker has taken every publication, marks the entry
published (marks are written in batches, off the handler's path). An entry that is still
unpublished `stale_s` after its commit — its instance died between the commit and the publish,
or could not reach the broker — is published by whichever instance's sweep finds it first
(`FOR UPDATE SKIP LOCKED` on PostgreSQL, so two sweeps never take the same entry at once), and
a retried send of the same clientMsgId publishes its entry at once. A receiver may thus be
offered a message twice; nexus.realtime.sequencer delivers each seq once, in order.

Without a message queue there is one process: every socket that could miss an event was on
the process that died, and comes back with `since`. Nothing is recorded then.
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any, Callable, Iterable

from sqlalchemy import delete, select, update

from nexus.extensions import db
from nexus.models import OutboxEntry, utcnow
from nexus.realtime import queue

log = logging.getLogger("nexus.outbox")

#: Entries taken by one sweep, at most.
SWEEP_BATCH = 200
#: Published entries are deleted this long after their publication.
KEEP_PUBLISHED = timedelta(minutes=10)
PURGE_EVERY_S = 60.0
#: How long marks wait to be written together (seconds).
MARK_DELAY_S = 0.2


def stored(emission: Any) -> dict[str, Any]:
    """An emission as the outbox keeps it."""
    return {"event": emission.event, "room": emission.room, "skipSid": emission.skip_sid, "data": emission.data}


class OutboxRelay:
    """Records, publishes and marks the durable events of one instance; sweeps up others' leftovers."""

    def __init__(
        self,
        app: Any,
        manager: Any,
        *,
        stale_s: float,
        instance_id: str,
        spawn: Callable[[Callable[[], Any]], Any],
        sleep: Callable[[float], Any],
    ):
        self.app = app
        self.manager = manager
        self.stale_s = stale_s
        self.instance_id = instance_id
        self._spawn = spawn
        self._sleep = sleep
        self._in_flight: set[int] = set()  # entries whose publications the broker has not all taken
        self._marks: list[int] = []
        self._marker: Any = None
        self._mark_failing = False
        self._purged_at = 0.0
        self.republished = 0

    # -- the committing instance ------------------------------------------------------------

    def record(self, session: Any, groups: dict[int | None, list[Any]]) -> list[tuple[int, list[Any]]]:
        """Add one outbox entry per message to the session's transaction (before its commit)."""
        entries = []
        for message_id, emissions in groups.items():
            entry = OutboxEntry(
                message_id=message_id, emissions=[stored(item) for item in emissions], instance_id=self.instance_id
            )
            session.add(entry)
            entries.append((entry, emissions))
        session.flush()
        return [(entry.id, emissions) for entry, emissions in entries]

    def publish(self, entry_id: int, emissions: Iterable[Any], deliver: Callable[[Iterable[Any]], None]) -> bool:
        """Publish an entry's events now; its mark follows once the broker has them all.
        True when the broker took them at once."""
        self._in_flight.add(entry_id)
        publication = queue.Publication(lambda: self._published(entry_id))
        with queue.tracking(publication):
            deliver(emissions)
        return publication.complete

    def _published(self, entry_id: int) -> None:
        self._in_flight.discard(entry_id)
        self._marks.append(entry_id)
        if self._marker is None:
            self._marker = True  # claimed before spawning: spawn may switch greenlets
            self._marker = self._spawn(self._write_marks)

    def _write_marks(self) -> None:
        delay = MARK_DELAY_S
        try:
            while self._marks:
                self._sleep(delay)
                ids, self._marks = self._marks, []
                try:
                    with self.app.app_context():
                        self._mark(ids)
                except Exception as exc:  # the database is away: the marks wait; a sweep may publish again
                    self._marks = ids + self._marks
                    if not self._mark_failing:
                        self._mark_failing = True
                        log.warning("cannot mark %d published outbox entries (%s); retrying", len(ids),
                                    type(exc).__name__)
                    delay = min(5.0, delay * 2)
                    continue
                if self._mark_failing:
                    self._mark_failing = False
                    log.info("outbox marks written again")
                delay = MARK_DELAY_S
        finally:
            self._marker = None

    @staticmethod
    def _mark(ids: list[int]) -> None:
        db.session.execute(
            update(OutboxEntry).where(OutboxEntry.id.in_(ids), OutboxEntry.published_at.is_(None))
            .values(published_at=utcnow())
        )
        db.session.commit()

    # -- any instance -------------------------------------------------------------------------

    def broker_ok(self) -> bool:
        status = getattr(self.manager, "queue_status", None)
        return True if status is None else bool(status().get("ok"))

    def sweep(self) -> int:
        """Publish the entries left unpublished past `stale_s` (app context); returns how many."""
        if not self.broker_ok():
            return 0  # they would only wait in this instance's memory too
        cutoff = utcnow() - timedelta(seconds=self.stale_s)
        rows = db.session.execute(
            select(OutboxEntry.id, OutboxEntry.emissions, OutboxEntry.instance_id)
            .where(OutboxEntry.published_at.is_(None), OutboxEntry.created_at < cutoff)
            .order_by(OutboxEntry.id)
            .limit(SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        ).all()
        published = self._republish([(row.id, row.emissions) for row in rows if row.id not in self._in_flight])
        if rows:
            log.warning("published %d outbox entr%s left unpublished (%s)", len(published),
                        "y" if len(published) == 1 else "ies",
                        ", ".join(sorted({row.instance_id for row in rows})))
        db.session.commit()
        self._purge()
        return len(published)

    def republish_message(self, message_id: int) -> bool:
        """A send was retried: publish its message's entry now if it is still unpublished (app context).
        True if there was one."""
        rows = db.session.execute(
            select(OutboxEntry.id, OutboxEntry.emissions)
            .where(OutboxEntry.message_id == message_id, OutboxEntry.published_at.is_(None))
            .with_for_update(skip_locked=True)
        ).all()
        if not rows:
            return False
        self._republish([(row.id, row.emissions) for row in rows])
        db.session.commit()
        log.info("a retried send re-published message %s, whose broadcast was not known to have gone out", message_id)
        return True

    def _republish(self, entries: list[tuple[int, list[dict[str, Any]]]]) -> list[int]:
        """Publish entries in id order; mark those the broker took at once in this transaction."""
        from nexus.realtime import broadcast

        facade = broadcast.broadcaster()
        done: list[int] = []
        for entry_id, emissions in entries:
            items = [broadcast.Emission(item["event"], item["data"], item["room"], item.get("skipSid"))
                     for item in emissions]
            if self.publish(entry_id, items, facade.deliver):
                done.append(entry_id)
            self.republished += 1
        if done:
            taken = set(done)
            self._marks = [entry for entry in self._marks if entry not in taken]
            db.session.execute(
                update(OutboxEntry).where(OutboxEntry.id.in_(done)).values(published_at=utcnow())
            )
        return done

    def _purge(self) -> None:
        now = time.monotonic()
        if now - self._purged_at < PURGE_EVERY_S:
            return
        self._purged_at = now
        result = db.session.execute(delete(OutboxEntry).where(OutboxEntry.published_at < utcnow() - KEEP_PUBLISHED))
        db.session.commit()
        if result.rowcount:
            log.info("removed %d published outbox entries", result.rowcount)

    def pending(self) -> int:
        """Entries not yet published (app context): for health and tests."""
        return db.session.scalar(
            select(db.func.count(OutboxEntry.id)).where(OutboxEntry.published_at.is_(None))
        ) or 0
