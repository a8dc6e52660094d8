"""Where Nexus hooks into python-socketio's packet handling (5.x private entry points).

Two things the public API does not offer: knowing whether an event came with an ack id,
and answering a malformed packet by closing that one connection quietly instead of a
traceback in the log per packet. Tests in tests/realtime and tests/live fail if a
python-socketio release moves these entry points.
"""
from __future__ import annotations

import logging
from typing import Any

from nexus.realtime.acks import ack_requested_var

log = logging.getLogger("nexus.realtime")


def install(server: Any) -> None:
    """Wrap the server's per-event and per-message entry points."""
    _track_ack_requests(server)
    _guard_malformed_packets(server)


def _track_ack_requests(server: Any) -> None:
    original = server._handle_event_internal

    def tracked(srv: Any, sid: str, eio_sid: str, data: Any, namespace: str, id: Any) -> Any:
        token = ack_requested_var.set(id is not None)
        try:
            return original(srv, sid, eio_sid, data, namespace, id)
        finally:
            ack_requested_var.reset(token)

    server._handle_event_internal = tracked


def _guard_malformed_packets(server: Any) -> None:
    original = server._handle_eio_message

    def guarded(eio_sid: str, data: Any) -> Any:
        try:
            return original(eio_sid, data)
        except ValueError as exc:  # bad JSON (orjson's error is a ValueError), unknown packet type
            # The payload is the client's: log its kind, never its content.
            log.warning("malformed packet from eio_sid=%s (%s); closing the connection", eio_sid, type(exc).__name__)
            server.start_background_task(server.eio.disconnect, eio_sid)
            return None

    server._handle_eio_message = guarded
    server.eio.on("message", guarded)  # engine.io holds the handler it was given at construction
