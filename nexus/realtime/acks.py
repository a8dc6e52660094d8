"""The ack contract: `{"success": true, ...}` or `{"success": false, "error": {code, message}}`.

Whether the client asked for an ack decides where an error goes: into the ack, or, when
no ack was asked for, into an `error` event. python-socketio does not tell a handler
whether an ack id came with the event; nexus.protocol.packets records it per event.
"""
from __future__ import annotations

import logging
import uuid
from typing import Any

from nexus import outages
from nexus.errors import NexusError
from nexus.logs import log_event
from nexus.protocol.packets import ack_requested_var

log = logging.getLogger("nexus.realtime")


def ok(**fields: Any) -> dict[str, Any]:
    """A success ack."""
    return {"success": True, **fields}


def failure(error: NexusError) -> dict[str, Any]:
    """A failure ack."""
    return {"success": False, "error": error.to_dict()}


def unexpected(exc: BaseException, *, event: str, sid: str) -> NexusError:
    """The error the client sees for an exception that is not a NexusError: UNAVAILABLE with a
    retry hint while the database or Redis is down (the outage is logged once, not per event),
    else an INTERNAL_ERROR logged with its traceback under a reference id."""
    return outages.refuse(exc) or internal_error(exc, event=event, sid=sid)


def internal_error(exc: BaseException, *, event: str, sid: str) -> NexusError:
    """Log an unexpected exception under a reference id and return the error the client sees."""
    reference = uuid.uuid4().hex[:12]
    log_event(log, "internal_error", "internal error ref={ref} event={eventName} sid={sid}", level=logging.ERROR,
              exc_info=exc, ref=reference, eventName=event, sid=sid)
    return NexusError(
        "INTERNAL_ERROR",
        f"Something went wrong on the server (reference {reference}).",
        details={"reference": reference},
    )


def ack_requested() -> bool:
    """True while handling an event that the client sent with an acknowledgement callback."""
    return ack_requested_var.get()
