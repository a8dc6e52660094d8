"""The message queue that lets every Nexus process, worker and script emit into the same rooms."""
from __future__ import annotations

from typing import Any

import socketio

from nexus.config import Config


def client_manager(config: Config, *, write_only: bool = False) -> Any | None:
    """A kombu-backed client manager for MESSAGE_QUEUE_URL (redis:// or amqp://), or None.

    Servers and external emitters must agree on both the URL and the channel, so every
    process builds its manager here.
    """
    if not config.message_queue_url:
        return None
    return socketio.KombuManager(
        config.message_queue_url,
        channel=config.queue_channel,
        write_only=write_only,
        connection_options={"connect_timeout": 5},
    )


def start_listening(server: Any) -> None:
    """Subscribe to the message queue now, not on the first client connection.

    python-socketio starts the listener lazily; until then an instance misses what other
    processes publish, so a broadcast sent just after start would skip its first clients.
    """
    if getattr(server, "manager_initialized", True):
        return
    server.manager_initialized = True
    server.manager.initialize()
