"""The one way anything is emitted: from a request, a handler, the CLI or a worker process.

Services call `emit` (now) or `emit_after_commit` (once the database commit that makes
the event true has happened; dropped on rollback). The transport behind the facade is
the app's Socket.IO server, a write-only message-queue emitter in processes that do not
serve clients, or a recorder in tests.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

from flask import current_app
from socketio.packet import EVENT
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from nexus import faults
from nexus.realtime.events import namespaces_for

log = logging.getLogger(__name__)

_PENDING_KEY = "nexus.pending_events"
_ENTRIES_KEY = "nexus.outbox_entries"
_EXTENSION_KEY = "nexus.broadcaster"


class Transport(Protocol):
    """Anything that can deliver an event to a room of a namespace."""

    def emit(
        self, event: str, data: Any, *, room: str | None, namespace: str, skip_sid: str | None, local: bool = False
    ) -> None: ...


@dataclass(frozen=True)
class Emission:
    """One event bound for one room; a durable one is recorded in the outbox with its change."""

    event: str
    data: Any
    room: str
    skip_sid: str | None = None
    durable: bool = False
    message_id: int | None = None


class Broadcaster:
    """Delivers events to every namespace that serves them."""

    def __init__(self, transport: Transport, namespaces: Iterable[str], count: Callable[[str], Any] | None = None):
        self.transport = transport
        self.namespaces = frozenset(namespaces)
        self.count = count  # called once per emission (metrics)
        # With a message queue: durable emissions go through the database (nexus.realtime.relay).
        self.outbox: Any = None

    def emit(self, event: str, data: Any, *, room: str, skip_sid: str | None = None) -> None:
        """Send now."""
        if self.count is not None:
            self.count(event)
        for namespace in namespaces_for(event):
            if namespace in self.namespaces:
                self.transport.emit(event, data, room=room, namespace=namespace, skip_sid=skip_sid)

    def reply(self, event: str, data: Any, *, sid: str, namespace: str) -> None:
        """Send to one socket of this process, on its own namespace (no message-queue hop)."""
        if self.count is not None:
            self.count(event)
        direct = getattr(self.transport, "reply", None)
        if direct is not None:
            direct(event, data, sid=sid, namespace=namespace)
        else:
            self.transport.emit(event, data, room=sid, namespace=namespace, skip_sid=None, local=True)

    def emit_here(self, event: str, data: Any, *, namespace: str, room: str | None = None) -> None:
        """Send to the sockets of this process only (a room of one namespace, or all of its sockets):
        operational messages such as live stats and shutdown notices, which every instance sends itself."""
        if self.count is not None:
            self.count(event)
        self.transport.emit(event, data, room=room, namespace=namespace, skip_sid=None, local=True)

    def deliver(self, emissions: Iterable[Emission]) -> None:
        for item in emissions:
            try:
                self.emit(item.event, item.data, room=item.room, skip_sid=item.skip_sid)
            except Exception:  # the commit stands; a lost event must not undo it
                log.exception("could not deliver %s to %s", item.event, item.room)


class ServerTransport:
    """Emits through this process's Socket.IO server (and its message queue, if any)."""

    def __init__(self, server: Any):
        self.server = server

    def emit(
        self, event: str, data: Any, *, room: str, namespace: str, skip_sid: str | None, local: bool = False
    ) -> None:
        self.server.emit(event, data, to=room, namespace=namespace, skip_sid=skip_sid, ignore_queue=local)

    def reply(self, event: str, data: Any, *, sid: str, namespace: str) -> None:
        """To one socket of this process: its packet goes straight to its connection, without the
        room lookup, fan-out and logging of an emit (a reply is never gated, sequenced or recorded:
        those apply to shared rooms). Nothing is sent to a socket that is gone."""
        server = self.server
        eio_sid = server.manager.eio_sid_from_sid(sid, namespace)
        if eio_sid is not None:
            server._send_packet(eio_sid, server.packet_class(EVENT, namespace=namespace, data=[event, data]))


class QueueTransport:
    """Emits through the message queue only: for workers, scripts and the CLI."""

    def __init__(self, manager: Any):
        self.manager = manager

    def emit(
        self, event: str, data: Any, *, room: str, namespace: str, skip_sid: str | None, local: bool = False
    ) -> None:
        self.manager.emit(event, data, namespace=namespace, room=room, skip_sid=skip_sid)


def install(app: Any, broadcaster: Broadcaster) -> None:
    """Make a broadcaster the app's facade."""
    app.extensions[_EXTENSION_KEY] = broadcaster


def broadcaster() -> Broadcaster:
    """The current app's facade (a test may have swapped its transport for a recorder)."""
    return current_app.extensions[_EXTENSION_KEY]


def emit(event: str, data: Any, *, room: str, skip_sid: str | None = None) -> None:
    """Send an event to a room now (use emit_after_commit when it reports a database change)."""
    broadcaster().emit(event, data, room=room, skip_sid=skip_sid)


def reply(event: str, data: Any, *, sid: str, namespace: str) -> None:
    """Send an event to one socket of this process (welcome, pong, error)."""
    broadcaster().reply(event, data, sid=sid, namespace=namespace)


def emit_after_commit(
    session: Session,
    event: str,
    data: Any,
    *,
    room: str,
    skip_sid: str | None = None,
    durable: bool = False,
    message_id: int | None = None,
) -> None:
    """Queue an event on a database session: sent after its commit, dropped on rollback.

    A durable event (one that reports a stored message, `message_id`) is also written to the
    outbox in the same transaction when there is a message queue, so that it is published even
    if this process dies right after the commit (nexus.realtime.relay).
    """
    session.info.setdefault(_PENDING_KEY, []).append(Emission(event, data, room, skip_sid, durable, message_id))


def _record_durable(session: Session) -> None:
    pending = session.info.get(_PENDING_KEY)
    if not pending or _ENTRIES_KEY in session.info:
        return
    relay = broadcaster().outbox
    if relay is None:
        return
    groups: dict[int | None, list[Emission]] = {}
    for item in pending:
        if item.durable:
            groups.setdefault(item.message_id, []).append(item)
    if groups:
        session.info[_ENTRIES_KEY] = relay.record(session, groups)


def _send_pending(session: Session) -> None:
    pending = session.info.pop(_PENDING_KEY, None)
    entries = session.info.pop(_ENTRIES_KEY, None)
    if not pending:
        return
    faults.hit("after_commit", (item.data.get("clientMsgId") for item in pending if isinstance(item.data, dict)))
    facade = broadcaster()
    if not entries:
        facade.deliver(pending)
        return
    for entry_id, emissions in entries:
        facade.outbox.publish(entry_id, emissions, facade.deliver)
    recorded = {id(item) for _, emissions in entries for item in emissions}
    rest = [item for item in pending if id(item) not in recorded]
    if rest:
        facade.deliver(rest)


def _drop_pending(session: Session) -> None:
    session.info.pop(_ENTRIES_KEY, None)
    dropped = session.info.pop(_PENDING_KEY, None)
    if dropped:
        log.debug("dropped %d event(s) of a rolled-back transaction", len(dropped))


def register_session_hooks(session_factory: Any) -> None:
    """Wire emit-after-commit into a session factory (flask-sqlalchemy's scoped session); idempotent."""
    if not sa_event.contains(session_factory, "after_commit", _send_pending):
        sa_event.listen(session_factory, "before_commit", _record_durable)
        sa_event.listen(session_factory, "after_commit", _send_pending)
        sa_event.listen(session_factory, "after_rollback", _drop_pending)
