"""Group commit: many callers' writes done in one database transaction, each caller answered after it.

A caller hands its item to `GroupCommit.submit` and waits. One committer (a greenlet
under gevent, a thread otherwise) takes what has queued up and passes it to the write function in
one call, in arrival order, within an app context of its own; the write commits once and returns
one outcome per item (a value, or an exception for that item alone), and every caller gets its own.

Batches form by themselves: an item that finds the committer idle is written at once, and what
arrives while a write is under way goes into the next one. While writes follow one another
(a busy server), a batch also stays open until `window_s` after its first item arrived, so that
more of the callers already on their way join it; a batch closes early at `max_batch` items.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import Any, Callable, Generic, Sequence, TypeVar

from nexus import outages

log = logging.getLogger("nexus.commits")

T = TypeVar("T")

#: How long a caller waits for its batch before it is answered UNAVAILABLE (seconds). A write that
#: is still under way then may yet commit: a client retrying with its clientMsgId gets that message.
WAIT_S = 30.0


class _Ticket:
    """One caller's item, and its outcome once the committer has one."""

    __slots__ = ("item", "arrived", "done", "outcome", "traceback")

    def __init__(self, item: Any, done: Any):
        self.item = item
        self.arrived = time.monotonic()
        self.done = done
        self.outcome: Any = None
        self.traceback: Any = None


class GroupCommit(Generic[T]):
    """Runs `write(items) -> outcomes` for items submitted by concurrent callers, a batch at a time."""

    def __init__(
        self,
        app: Any,
        write: Callable[[list[T]], Sequence[Any]],
        *,
        window_s: float,
        max_batch: int,
        green: bool,
        wait_s: float = WAIT_S,
    ):
        self.app = app
        self.write = write
        self.window_s = window_s
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.pid = os.getpid()  # a committer inherited through fork has no greenlet or thread behind it
        self._queue: deque[_Ticket] = deque()
        # Guards the queue and the running flag; never held across a greenlet switch or a wait.
        self._lock = threading.Lock()
        self._running = False
        self._lingering = False
        if green:
            import gevent
            from gevent.event import Event

            self._event: Callable[[], Any] = Event
            self._spawn: Callable[[Callable[[], None]], Any] = gevent.spawn
        else:
            self._event = threading.Event
            self._spawn = lambda run: threading.Thread(target=run, name="nexus-group-commit", daemon=True).start()
        self._more = self._event()  # set when a lingering batch has filled up
        self.batches = 0
        self.written = 0

    def submit(self, item: T) -> Any:
        """Queue an item, wait for its batch's commit and return its outcome (or raise its error)."""
        ticket = _Ticket(item, self._event())
        with self._lock:
            self._queue.append(ticket)
            start = not self._running
            self._running = True
            full = self._lingering and len(self._queue) >= self.max_batch
        if start:
            self._spawn(self._run)
        elif full:
            self._more.set()
        if not ticket.done.wait(self.wait_s):
            with self._lock:
                queued = ticket in self._queue
                if queued:
                    self._queue.remove(ticket)  # never written: the caller may safely send it again
            if queued or not ticket.done.is_set():
                log.warning("a write waited %.0f s for its batch (%s)", self.wait_s,
                            "still queued" if queued else "its batch is still being written")
                raise outages.unavailable(outages.DATABASE)
        if isinstance(ticket.outcome, BaseException):
            raise ticket.outcome.with_traceback(ticket.traceback)
        return ticket.outcome

    # -- the committer ------------------------------------------------------------------------

    def _run(self) -> None:
        busy = False
        batch: list[_Ticket] = []
        try:
            with self.app.app_context():
                while True:
                    batch = self._next_batch(busy)
                    if not batch:
                        return
                    self._write(batch)
                    batch = []
                    busy = True
        except BaseException as exc:  # the committer itself failed: nobody may wait for it in vain
            log.exception("the group committer stopped")
            self._answer_all(batch, exc if isinstance(exc, Exception) else outages.unavailable(outages.DATABASE))
            with self._lock:
                left, self._queue = list(self._queue), deque()
                self._running = False
            self._answer_all(left, outages.unavailable(outages.DATABASE))
            if not isinstance(exc, Exception):
                raise

    def _next_batch(self, busy: bool) -> list[_Ticket]:
        with self._lock:
            if not self._queue:
                self._running = False  # the next submit starts a committer again
                return []
            linger = (
                self.window_s - (time.monotonic() - self._queue[0].arrived)
                if busy and len(self._queue) < self.max_batch else 0.0
            )
            if linger > 0:
                self._lingering = True
                self._more.clear()
        if linger > 0:
            self._more.wait(linger)
            with self._lock:
                self._lingering = False
        with self._lock:
            count = min(len(self._queue), self.max_batch)
            return [self._queue.popleft() for _ in range(count)]

    def _write(self, batch: list[_Ticket]) -> None:
        try:
            outcomes = list(self.write([ticket.item for ticket in batch]))
            if len(outcomes) != len(batch):
                raise RuntimeError(f"the write answered {len(outcomes)} of {len(batch)} items")
        except Exception as exc:  # the write gave up as a whole: every item of the batch fails with it
            outcomes = [exc] * len(batch)
        self.batches += 1
        self.written += len(batch)
        for ticket, outcome in zip(batch, outcomes):
            self._answer(ticket, outcome)

    def _answer_all(self, tickets: list[_Ticket], outcome: BaseException) -> None:
        for ticket in tickets:
            if not ticket.done.is_set():
                self._answer(ticket, outcome)

    @staticmethod
    def _answer(ticket: _Ticket, outcome: Any) -> None:
        ticket.outcome = outcome
        if isinstance(outcome, BaseException):
            ticket.traceback = outcome.__traceback__  # each caller raises it with the writer's traceback
        ticket.done.set()
