"""Emit into Nexus from a process that serves no clients: scripts, cron jobs, Celery tasks.

    from nexus.emitter import Emitter

    with Emitter.from_env(name="billing") as emitter:
        emitter.notify("alice", "Invoice paid", "Thanks!", type="success")

or, with a process-wide emitter created on first use and flushed at exit:

    from nexus import emitter
    emitter.notify(7, "Export ready", "Download it from your account page.")

An Emitter needs only DATABASE_URL and MESSAGE_QUEUE_URL (and, in production, what the
configuration requires there). Every call goes through the same services as the server:
persisted first, then emitted through the message queue after the commit, so clients get
exactly what the server itself would have sent. When the queue is unreachable, emissions wait
in an outbox and are sent when it is back; `flush` waits for that, `close` flushes first.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from nexus.config import Config, ConfigError

log = logging.getLogger("nexus.emitter")

DEFAULT_NAME = "emitter"
FLUSH_TIMEOUT_S = 10.0


class Emitter:
    """Sends notifications and broadcasts to every Nexus instance through the message queue."""

    def __init__(self, config: Config | Mapping[str, Any] | None = None, *, name: str = DEFAULT_NAME, app: Any = None):
        """Build the app for `config` (a Config, overrides of the environment's, or None for the
        environment), or use `app`; ConfigError("MESSAGE_QUEUE_URL", ...) when no queue is configured."""
        from nexus.realtime import broadcast, queue
        from nexus.services.broadcasts import Sender

        if app is not None:
            settings = app.config["NEXUS"]
        elif isinstance(config, Config):
            settings = config
        else:
            settings = Config.from_env(**dict(config or {}))
        if not settings.message_queue_url:
            raise ConfigError(
                "MESSAGE_QUEUE_URL",
                "is not set: an emitter reaches the Nexus servers only through the message queue",
            )
        if app is None:
            from nexus import create_app

            if settings.async_mode is None:  # this process serves no sockets: no gevent needed
                settings = settings.with_overrides(async_mode="threading")
            app = create_app(settings)
        self.app = app
        self.name = name
        self.sender = Sender.service(name)
        self.manager = queue.client_manager(settings, write_only=True)
        namespaces = app.extensions["nexus.broadcaster"].namespaces
        broadcast.install(app, broadcast.Broadcaster(broadcast.QueueTransport(self.manager), namespaces))
        self._closed = False

    @classmethod
    def from_env(cls, name: str = DEFAULT_NAME, **overrides: Any) -> Emitter:
        """An emitter configured from the environment (with optional Config overrides)."""
        return cls(Config.from_env(**overrides), name=name)

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- what it sends --------------------------------------------------------------------------

    def notify(
        self, user: int | str, title: str, message: str, *, type: str = "info", data: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A persisted `notification` to one user (an id, or a username), live on every socket of theirs."""
        from nexus.services import notifications

        with self._context():
            return notifications.notify(
                self._user_id(user), title, message, type=type, data=data, sender=self.sender
            )

    def system_message(self, message: str) -> dict[str, Any]:
        """`system_message` to every connected user."""
        from nexus.services import broadcasts

        with self._context():
            return broadcasts.send_system_message(self.sender, message)

    def admin_message(self, message: str) -> dict[str, Any]:
        """`admin_message` to the administrators."""
        from nexus.services import broadcasts

        with self._context():
            return broadcasts.send_admin_message(self.sender, message)

    def department_message(self, department: str, message: str) -> dict[str, Any]:
        """`department_message` to the members of one department."""
        from nexus.services import broadcasts

        with self._context():
            return broadcasts.send_department_message(self.sender, department, message)

    def room_message(self, room: str, message: str) -> dict[str, Any]:
        """A `system_message` of type "room" to the members of one chat room."""
        from nexus.services import broadcasts

        with self._context():
            return broadcasts.send_room_message(self.sender, room, message)

    def emit(self, event: str, data: Any, *, room: str, namespace: str = "/") -> None:
        """A raw event into a room of one namespace, on every instance (nothing is persisted)."""
        self._check_open()
        self.manager.emit(event, data, namespace=namespace, room=room)

    # -- the queue ---------------------------------------------------------------------------------

    def queue_status(self) -> dict[str, Any]:
        """{"ok", "pending", "since", "lastError", ...} of this emitter's outbox."""
        return self.manager.queue_status()

    def flush(self, timeout: float = FLUSH_TIMEOUT_S) -> bool:
        """Wait until everything emitted so far has reached the message queue; False on timeout."""
        return self.manager.flush(timeout)

    def close(self, timeout: float = FLUSH_TIMEOUT_S) -> bool:
        """Flush (up to `timeout`), then release the queue, database and Redis connections.

        Returns False, after logging how many, when some emissions could not be sent.
        """
        if self._closed:
            return True
        self._closed = True
        flushed = self.manager.close(timeout)
        if not flushed:
            status = self.manager.queue_status()
            log.error(
                "closing the %s emitter with %d emission(s) not sent: the message queue is unreachable (%s)",
                self.name,
                status["pending"],
                status["lastError"],
            )
        self._release_app()
        return flushed

    # -- helpers -------------------------------------------------------------------------------------

    @contextmanager
    def _context(self) -> Iterator[None]:
        self._check_open()
        with self.app.app_context():
            yield

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the {self.name} emitter is closed")

    @staticmethod
    def _user_id(user: int | str) -> int:
        """An id as is; a username looked up (a string of digits that names nobody is taken as an id)."""
        from nexus.errors import NexusError
        from nexus.services.users import find_by_username

        if isinstance(user, int) and not isinstance(user, bool):
            return user
        if not isinstance(user, str) or not user.strip():
            raise NexusError("VALIDATION_ERROR", "user: an id or a username is required.")
        found = find_by_username(user)
        if found is not None:
            return found.id
        if user.strip().isascii() and user.strip().isdigit():
            return int(user.strip())
        raise NexusError("USER_NOT_FOUND", f"No user named {user.strip()!r}.")

    def _release_app(self) -> None:
        from nexus.extensions import db

        try:
            with self.app.app_context():
                db.session.remove()
                db.engine.dispose()
        except Exception:
            log.debug("could not dispose of the database engine", exc_info=True)
        stores = self.app.extensions.get("nexus.stores")
        client = getattr(stores, "client", None)
        if client is not None:
            try:
                client.close()
            except Exception:
                log.debug("could not close the Redis client", exc_info=True)


# -- a process-wide emitter -------------------------------------------------------------------------

_shared: dict[str, Emitter] = {}
_shared_pid = os.getpid()
_shared_lock = threading.Lock()


def shared_emitter(name: str = DEFAULT_NAME) -> Emitter:
    """This process's emitter of that name, created from the environment on first use and closed at exit."""
    global _shared_pid
    with _shared_lock:
        if _shared_pid != os.getpid():  # forked (a Celery pool child): the parent's connections are not ours
            _shared.clear()
            _shared_pid = os.getpid()
        emitter = _shared.get(name)
        if emitter is None or emitter._closed:
            emitter = Emitter.from_env(name=name)
            _shared[name] = emitter
        return emitter


def close_shared(timeout: float = FLUSH_TIMEOUT_S) -> bool:
    """Flush and close every process-wide emitter (done at exit); False if some emissions were not sent."""
    with _shared_lock:
        emitters = list(_shared.values()) if _shared_pid == os.getpid() else []
        _shared.clear()
    results = [emitter.close(timeout) for emitter in emitters]  # every one, even after a failure
    return all(results)


atexit.register(close_shared)


def notify(
    user: int | str, title: str, message: str, *, type: str = "info", data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Emitter.notify on the process-wide emitter."""
    return shared_emitter().notify(user, title, message, type=type, data=data)


def broadcast_system_message(message: str) -> dict[str, Any]:
    """Emitter.system_message on the process-wide emitter."""
    return shared_emitter().system_message(message)


def broadcast_admin_message(message: str) -> dict[str, Any]:
    """Emitter.admin_message on the process-wide emitter."""
    return shared_emitter().admin_message(message)


def broadcast_department_message(department: str, message: str) -> dict[str, Any]:
    """Emitter.department_message on the process-wide emitter."""
    return shared_emitter().department_message(department, message)


def broadcast_room_message(room: str, message: str) -> dict[str, Any]:
    """Emitter.room_message on the process-wide emitter."""
    return shared_emitter().room_message(room, message)


def emit(event: str, data: Any, *, room: str, namespace: str = "/") -> None:
    """Emitter.emit on the process-wide emitter."""
    shared_emitter().emit(event, data, room=room, namespace=namespace)


def flush(timeout: float = FLUSH_TIMEOUT_S) -> bool:
    """Emitter.flush on the process-wide emitter."""
    return shared_emitter().flush(timeout)
