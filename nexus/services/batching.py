"""Work many greenlets ask for at the same moment, done once for all of them: a reconnect storm
brings thousands of connections whose status writes and welcome reads (`Batcher`) and online list
(`SharedRead`) would otherwise each cost a database round trip and a pooled connection of their own.

Neither keeps a greenlet of its own: the first caller does the work of everyone who is waiting,
and hands the next batch to one of the callers that arrived meanwhile, so that no caller works for
others longer than one batch. The primitives are gevent's when it has patched threading (the
server), plain threads' otherwise (tests, scripts).
"""
from __future__ import annotations

from threading import Event, Lock
from typing import Any, Callable, Generic, Sequence, TypeVar

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


class _Entry(Generic[_Item]):
    __slots__ = ("value", "turn", "done", "result", "error")

    def __init__(self, value: _Item):
        self.value = value
        self.turn = Event()  # set when it is done, or when its caller is to do the next batch
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class Batcher(Generic[_Item, _Result]):
    """Items submitted by many greenlets at once, handled in batches: `submit` returns the item's
    result once its batch is done (or raises what doing the batch raised). `handle` gets the batch in
    submission order and returns one result per item, or None when there are none. Every item of a
    batch was submitted before the batch began."""

    def __init__(self, handle: Callable[[list[_Item]], Sequence[_Result] | None]):
        self.handle = handle
        self._lock = Lock()
        self._pending: list[_Entry[_Item]] = []
        self._busy = False

    def submit(self, value: _Item) -> _Result:
        entry: _Entry[_Item] = _Entry(value)
        with self._lock:
            self._pending.append(entry)
            lead = not self._busy
            self._busy = True
        if not lead:
            try:
                entry.turn.wait()
            except BaseException:  # the caller was interrupted (a timeout, a kill): others must not wait on it
                self._abandon(entry)
                raise
            if entry.done:
                if entry.error is not None:
                    raise _passed_on(entry.error)
                return entry.result
        with self._lock:
            batch, self._pending = self._pending, []
        error: BaseException | None = None
        results: Sequence[Any] | None = None
        try:
            results = self.handle([item.value for item in batch])
        except BaseException as exc:
            error = exc
        with self._lock:
            for index, item in enumerate(batch):
                item.done, item.error = True, error
                item.result = results[index] if results is not None and error is None else None
            if self._pending:
                self._pending[0].turn.set()  # its caller does the next batch
            else:
                self._busy = False
        for item in batch:
            item.turn.set()
        if error is not None:
            raise error
        return entry.result

    def _abandon(self, entry: _Entry[_Item]) -> None:
        with self._lock:
            if entry.done or entry not in self._pending:
                return
            self._pending.remove(entry)
            if entry.turn.is_set():  # it was to do the next batch: the next caller does
                if self._pending:
                    self._pending[0].turn.set()
                else:
                    self._busy = False


def _passed_on(error: BaseException) -> Exception:
    """What another caller's failure is raised as in a caller that waited for it."""
    return error if isinstance(error, Exception) else RuntimeError(f"the shared call was interrupted ({error!r})")


class _Round(Generic[_Result]):
    __slots__ = ("turn", "finished", "claimed", "value", "error")

    def __init__(self) -> None:
        self.turn = Event()  # the round before it finished: one of its callers may read it now
        self.finished = Event()
        self.claimed = False
        self.value: _Result | None = None
        self.error: BaseException | None = None


class SharedRead(Generic[_Result]):
    """A read many greenlets ask for at once, done once for all of them: `get` returns the result of
    a read that began after it was called (never one already under way), shared by every caller
    that asked before that read began. One read at a time; the callers that arrive during one share
    the next, read by the first of them."""

    def __init__(self, read: Callable[[], _Result]):
        self.read = read
        self._lock = Lock()
        self._next: _Round[_Result] | None = None  # the round callers join: not begun yet
        self._reading = False

    def get(self) -> _Result:
        with self._lock:
            round_ = self._next
            if round_ is None:
                round_ = self._next = _Round()
            lead = not self._reading and self._claim(round_)
        if not lead:
            round_.turn.wait()
            with self._lock:
                lead = not round_.claimed and self._claim(round_)
            if not lead:
                round_.finished.wait()
                if round_.error is not None:
                    raise _passed_on(round_.error)
                return round_.value  # type: ignore[return-value]
        try:
            round_.value = self.read()
        except BaseException as exc:
            round_.error = exc
        with self._lock:
            following = self._next
            if following is not None:
                following.turn.set()
            else:
                self._reading = False
        round_.finished.set()
        if round_.error is not None:
            raise round_.error
        return round_.value  # type: ignore[return-value]

    def _claim(self, round_: _Round[_Result]) -> bool:
        # Under the lock: this caller reads `round_`; later callers join a new one.
        round_.claimed = True
        self._reading = True
        if self._next is round_:
            self._next = None
        return True
