"""Client managers: the message queue that lets every Nexus process, worker and script emit into
the same rooms, and the per-socket catch-up screening of nexus.realtime.gate."""
from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import socketio

from nexus.config import Config
from nexus.realtime.gate import RoomGate, merged_skip

log = logging.getLogger("nexus.queue")

_PROBE = "nexus_probe"


class _GatedManager(socketio.Manager):
    """Local fan-out that leaves out the sockets a RoomGate holds back."""

    gate: RoomGate | None = None

    def emit(self, event, data, namespace, room=None, skip_sid=None, callback=None, to=None, **kwargs):
        room = to or room
        if self.gate is not None:
            held = self.gate.screen(namespace, room, event, data)
            if held:
                skip_sid = merged_skip(skip_sid, held)
        return super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs)


class LocalManager(_GatedManager):
    """One process, no message queue."""


class QueueManager(socketio.KombuManager, _GatedManager):
    """kombu (redis:// or amqp://) with gated local fan-out and a listening probe.

    The local fan-out of PubSubManager (its own emissions and those it receives) goes through
    _GatedManager.emit, which comes after PubSubManager in the method resolution order.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._probe_token = uuid.uuid4().hex
        self._listening = threading.Event()

    def _listen(self):  # noqa: ANN202 - python-socketio's generator
        for message in super()._listen():
            if isinstance(message, str) and self._probe_token in message:
                self._listening.set()  # our own probe came back; python-socketio ignores the method
                continue
            yield message

    def wait_until_listening(self, timeout: float) -> bool:
        """Publish probes until one comes back through the queue: the subscription is live."""
        deadline = time.monotonic() + timeout
        while not self._listening.is_set() and time.monotonic() < deadline:
            try:
                self._publish({"method": _PROBE, "token": self._probe_token, "host_id": self.host_id})
            except Exception as exc:  # the broker is down: start anyway, the listener retries
                log.warning("message queue probe failed: %s", type(exc).__name__)
                return False
            self._listening.wait(0.2)
        return self._listening.is_set()


def client_manager(config: Config, *, write_only: bool = False) -> Any:
    """The client manager of a server (gated fan-out; kombu when MESSAGE_QUEUE_URL is set), or a
    write-only kombu emitter for processes that serve no clients (None without a queue).

    Servers and external emitters must agree on both the URL and the channel, so every
    process builds its manager here.
    """
    if not config.message_queue_url:
        return None if write_only else LocalManager()
    if write_only:
        return socketio.KombuManager(
            config.message_queue_url,
            channel=config.queue_channel,
            write_only=True,
            connection_options={"connect_timeout": 5},
        )
    return QueueManager(
        config.message_queue_url,
        channel=config.queue_channel,
        connection_options={"connect_timeout": 5},
    )


def start_listening(server: Any, timeout: float = 10.0) -> None:
    """Subscribe to the message queue now, and wait until the subscription is live.

    python-socketio starts the listener lazily, on the first client connection; until then an
    instance misses what other processes publish, so a broadcast sent just after start would
    skip its first clients. kombu subscribes inside the listener greenlet, so this waits for a
    probe to make the round trip before the server takes connections.
    """
    manager = server.manager
    if not getattr(server, "manager_initialized", True):
        server.manager_initialized = True
        manager.initialize()
    if isinstance(manager, QueueManager) and not manager.wait_until_listening(timeout):
        log.warning("the message queue did not answer within %.0fs; serving anyway", timeout)
