"""The ack contract: `{"success": true, ...}` or `{"success": false, "error": {code, message}}`.

Whether the client asked for an ack decides where an error goes: into the ack, or, when
no ack was asked for, into an `error` event. python-socketio does not tell a handler
whether an ack id came with the event, so `track_ack_requests` records it per event.
"""
from __future__ import annotations

import logging
import uuid
from contextvars import ContextVar
from typing import Any

from nexus.errors import NexusError

log = logging.getLogger("nexus.realtime")

_ack_requested: ContextVar[bool] = ContextVar("nexus_ack_requested", default=False)


def ok(**fields: Any) -> dict[str, Any]:
    """A success ack."""
    return {"success": True, **fields}


def failure(error: NexusError) -> dict[str, Any]:
    """A failure ack."""
    return {"success": False, "error": error.to_dict()}


def internal_error(exc: BaseException, *, event: str, sid: str) -> NexusError:
    """Log an unexpected exception under a reference id and return the error the client sees."""
    reference = uuid.uuid4().hex[:12]
    log.error("internal error ref=%s event=%s sid=%s", reference, event, sid, exc_info=exc)
    return NexusError(
        "INTERNAL_ERROR",
        f"Something went wrong on the server (reference {reference}).",
        details={"reference": reference},
    )


def ack_requested() -> bool:
    """True while handling an event that the client sent with an acknowledgement callback."""
    return _ack_requested.get()


def track_ack_requests(server: Any) -> None:
    """Record, for each incoming event, whether it carries an ack id.

    Wraps python-socketio's per-event entry point (`_handle_event_internal`, present in
    python-socketio 5.x); test_unknown_event_with_and_without_ack fails if a release changes it.
    """
    original = server._handle_event_internal

    def tracked(srv: Any, sid: str, eio_sid: str, data: Any, namespace: str, id: Any) -> Any:
        token = _ack_requested.set(id is not None)
        try:
            return original(srv, sid, eio_sid, data, namespace, id)
        finally:
            _ack_requested.reset(token)

    server._handle_event_internal = tracked
