"""The Celery app of Nexus (`celery -A nexus.worker worker`): notifications and broadcasts sent by tasks.

    from nexus.worker import send_notification
    send_notification.delay("alice", "Export ready", "Download it from your account page.")

The broker is CELERY_BROKER_URL, else MESSAGE_QUEUE_URL; results go to the same Redis (or
back over AMQP with rpc://) for an hour. Only JSON is sent or accepted. Each task runs its
service through one process-wide Emitter named "worker", so what it sends is persisted and
delivered exactly as if a server had sent it; when the message queue is unreachable the
emitter's outbox keeps the live events, and the task succeeds once the data is saved. A task
whose target does not exist (or whose input is invalid) fails with the error code in its
message, and is not retried. The configuration is read when the app is first used, not at import.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from celery import Celery, shared_task, signals

from nexus.config import Config, ConfigError

log = logging.getLogger("nexus.worker")

WORKER_NAME = "worker"
RESULT_TTL_S = 3600


class TaskFailed(Exception):
    """A task that cannot succeed, whatever the retries: "CODE: message" of the NexusError."""


def celery_settings(config: Config) -> dict[str, Any]:
    """Celery's configuration for a Nexus configuration."""
    broker = config.celery_broker_url or config.message_queue_url
    if not broker:
        raise ConfigError(
            "CELERY_BROKER_URL", "is not set, and neither is MESSAGE_QUEUE_URL: the worker needs a broker"
        )
    # Redis behind Sentinel: kombu's and Celery's `sentinel://` form, and the primary's name.
    from nexus.stores.sentinel import kombu_broker

    broker, transport_options = kombu_broker(broker)
    backend = broker if broker.startswith(("redis://", "rediss://", "sentinel://")) else "rpc://"
    sentinel = {"broker_transport_options": transport_options,
                "result_backend_transport_options": transport_options} if transport_options else {}
    return {
        "broker_url": broker,
        "result_backend": backend,
        **sentinel,
        "result_expires": RESULT_TTL_S,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_default_queue": f"{config.queue_channel}.tasks",
        "task_acks_late": False,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
        "enable_utc": True,
    }


class _LazySettings(Mapping):
    """Celery's configuration, computed from the environment (through nexus.config) on first use."""

    def __init__(self, config: Config | None = None):
        self._config = config
        self._settings: dict[str, Any] | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = Config.from_env()
        return self._config

    def _load(self) -> dict[str, Any]:
        if self._settings is None:
            self._settings = celery_settings(self.config)
        return self._settings

    def __getitem__(self, key: str) -> Any:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def make_celery(config: Config | None = None) -> Celery:
    """A Celery app with the Nexus tasks: for `config`, or for the environment (read on first use)."""
    celery = Celery("nexus", set_as_current=config is None)
    settings = _LazySettings(config)
    celery.config_from_object(settings)
    celery.nexus_settings = settings  # type: ignore[attr-defined]
    return celery


app = make_celery()


def _emitter() -> Any:
    from nexus.emitter import shared_emitter

    return shared_emitter(WORKER_NAME)


def _run(call: Any) -> dict[str, Any]:
    from nexus.errors import NexusError

    try:
        return call(_emitter())
    except NexusError as exc:
        raise TaskFailed(f"{exc.code}: {exc.message}") from None


_TASK_OPTIONS: dict[str, Any] = {"acks_late": False, "ignore_result": False}


@shared_task(name="nexus.worker.send_notification", **_TASK_OPTIONS)
def send_notification(
    user: int | str, title: str, message: str, type: str = "info", data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A persisted `notification` to one user (an id or a username)."""
    return _run(lambda emitter: emitter.notify(user, title, message, type=type, data=data))


@shared_task(name="nexus.worker.broadcast_system_message", **_TASK_OPTIONS)
def broadcast_system_message(message: str) -> dict[str, Any]:
    """`system_message` to every connected user."""
    return _run(lambda emitter: emitter.system_message(message))


@shared_task(name="nexus.worker.broadcast_admin_message", **_TASK_OPTIONS)
def broadcast_admin_message(message: str) -> dict[str, Any]:
    """`admin_message` to the administrators."""
    return _run(lambda emitter: emitter.admin_message(message))


@shared_task(name="nexus.worker.broadcast_department_message", **_TASK_OPTIONS)
def broadcast_department_message(department: str, message: str) -> dict[str, Any]:
    """`department_message` to one department."""
    return _run(lambda emitter: emitter.department_message(department, message))


@shared_task(name="nexus.worker.broadcast_room_message", **_TASK_OPTIONS)
def broadcast_room_message(room: str, message: str) -> dict[str, Any]:
    """A `system_message` of type "room" to the members of one chat room."""
    return _run(lambda emitter: emitter.room_message(room, message))


@signals.setup_logging.connect
def _setup_logging(**_kwargs: Any) -> None:
    # Nexus's logging (token scrubbing, JSON in production, LOG_LEVEL) instead of Celery's, which
    # would also print every record a second time through the redirected standard streams.
    from nexus.logs import configure_logging

    configure_logging(app.nexus_settings.config)


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _close_emitter(**_kwargs: Any) -> None:
    # Events still in the outbox get their chance before the process goes.
    from nexus.emitter import close_shared

    if not close_shared():
        log.error("the worker stopped with live events that could not reach the message queue")
