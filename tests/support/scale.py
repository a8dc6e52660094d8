"""Scale-out test support: N Nexus instances run as the Procfile runs them (gunicorn, one worker each),
on one Redis, one PostgreSQL database of their own and one message queue, with a Celery worker;
and clients that reconnect by themselves, resuming their rooms with `since`."""
from __future__ import annotations

import contextlib
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import requests
import socketio

from tests.support import services
from tests.support.cluster import Client
from tests.support.live import LiveServer, LiveServerFactory, Seeder

READY_TIMEOUT_S = 45.0


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database on the machine's server (whatever DATABASE_URL says), dropped after."""
    services.require("postgres")
    import psycopg

    admin = services.postgres_admin_url()
    name = "nexus_scale_" + uuid.uuid4().hex[:12]
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rpartition("/")[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def stored(database_url: str, ids: set[str]) -> set[str]:
    """The message ids (as the wire writes them) among `ids` that are in a PostgreSQL database."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT id FROM messages WHERE id = ANY(:ids)"),
                                      {"ids": [int(i) for i in ids]})
            return {str(row[0]) for row in rows}
    finally:
        engine.dispose()


def instance_pid(server: LiveServer) -> int:
    """The pid of the gunicorn worker (the process that serves) under a Procfile instance's master."""
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    assert len(children) == 1, f"one gunicorn worker expected under {server.process.pid}, got {children}"
    return int(children[0])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Grid:
    """Nexus instances sharing a database, a Redis prefix and a queue channel; a worker when asked."""

    factory: LiveServerFactory
    database_url: str
    seeder: Seeder
    channel: str
    env: dict[str, str]
    servers: list[LiveServer] = field(default_factory=list)
    worker: Any = None
    _tokens: dict[str, str] = field(default_factory=dict)

    def token(self, username: str) -> str:
        if username not in self._tokens:
            self._tokens[username] = self.seeder.token(username)
        return self._tokens[username]

    def user_id(self, username: str) -> str:
        return str(self.seeder.user(username)["id"])

    def by_id(self, instance_id: str) -> LiveServer:
        [server] = [s for s in self.servers if s.instance_id == instance_id]
        return server

    def celery(self) -> Any:
        """The sending side of the worker's tasks, as a web process would have it."""
        from nexus.config import Config
        from nexus.worker import make_celery

        config = Config.from_env({**self.env, "NEXUS_INSTANCE_PATH": str(self.factory.tmp_path / "celery-client"),
                                  "JWT_SECRET": self.factory.secret})
        return make_celery(config)


@contextlib.contextmanager
def grid(
    tmp_path: Path,
    *,
    queue_url: str,
    ids: list[str],
    users: dict[str, dict[str, Any]],
    env: dict[str, str] | None = None,
    worker: bool = False,
) -> Iterator[Grid]:
    """Start len(ids) instances as the Procfile's `web` (booting side by side), each with its
    NEXUS_INSTANCE_ID, on a fresh database and a fresh Redis prefix; stop everything after."""
    services.require("redis")
    if queue_url.startswith("amqp"):
        services.require("rabbitmq")
    with contextlib.ExitStack() as stack:
        # Entered first, left last: the Redis keys go once the processes that wrote them have stopped.
        channel = stack.enter_context(services.redis_channel())
        stack.callback(_delete_queue_leftovers, queue_url, channel)
        url = stack.enter_context(postgres_database())
        factory = LiveServerFactory(tmp_path, secret=secrets.token_urlsafe(40))
        stack.callback(factory.stop_all)
        seeder = Seeder(url, factory.secret, tmp_path / "seeder")
        factory.seeders.append(seeder)
        for name, fields in users.items():
            seeder.user(name, **fields)
        shared = {
            "MESSAGE_QUEUE_URL": queue_url,
            "REDIS_URL": services.REDIS_URL,
            "SOCKETIO_REDIS_PREFIX": channel,
            **(env or {}),
        }
        the_grid = Grid(factory, url, seeder, channel, shared)
        for instance_id in ids:
            server = factory.start(url, kind="procfile", env={**shared, "NEXUS_INSTANCE_ID": instance_id}, wait=False)
            server.instance_id = instance_id
            the_grid.servers.append(server)
        for server in the_grid.servers:
            server.wait_ready(READY_TIMEOUT_S)
            wait_until_ready(server)
        redis_run = _redis_run_id()
        if worker:
            from tests.live.test_emitter import process_env
            from tests.live.test_worker import Worker

            worker_env = process_env(factory, url, tmp_path, {**shared, "NEXUS_INSTANCE_ID": "scale-worker"})
            the_grid.worker = Worker(worker_env, tmp_path / "worker.log")
            stack.callback(the_grid.worker.stop)
            the_grid.worker.wait_ready()
        try:
            yield the_grid
        except AssertionError as exc:
            if _redis_run_id() != redis_run:  # say so: every piece of shared state was lost with it
                raise AssertionError(f"Redis was restarted during this test (another test run's outage "
                                     f"test?), so the instances' shared state was lost: {exc}") from exc
            raise


def _redis_run_id() -> str | None:
    with contextlib.suppress(Exception):
        import redis

        connection = redis.Redis.from_url(services.REDIS_URL, socket_connect_timeout=2)
        try:
            return connection.info("server")["run_id"]
        finally:
            connection.close()
    return None


def wait_until_ready(server: LiveServer, timeout: float = 20.0) -> None:
    """GET /health/ready answers 200: database, queue (listener subscribed) and Redis are up."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            answer = requests.get(server.url + "/health/ready", timeout=3)
            if answer.status_code == 200:
                return
            last = answer.json()
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{server.url} not ready within {timeout}s: {last}")


def _delete_queue_leftovers(queue_url: str, channel: str) -> None:
    """kombu's bindings for the channel (Redis), or its fanout exchange (RabbitMQ)."""
    with contextlib.suppress(Exception):
        if queue_url.startswith("amqp"):
            import kombu

            with kombu.Connection(queue_url, connect_timeout=5) as connection:
                kombu.Exchange(channel, type="fanout", durable=False)(connection.default_channel).delete()
                kombu.Queue(f"{channel}.tasks")(connection.default_channel).delete()  # the worker's
        import redis

        connection = redis.Redis.from_url(services.REDIS_URL)
        try:
            keys = list(connection.scan_iter(match=f"*{channel}*", count=500))
            if keys:
                connection.delete(*keys)
        finally:
            connection.close()


# -- clients that come back by themselves ---------------------------------------------------


class Tab(Client):
    """A recording client (WebSocket only) that reconnects by itself, like a browser tab.

    Every event is stamped with its arrival time. Once it has joined a room, each reconnection
    sends `auth: {token, since: {room: seq}}`, seq being the last one up to which it has seen
    every message, so the server replays exactly what it missed.
    """

    def __init__(self, name: str, token: str, *, reconnect: bool = True, delay: float = 0.2) -> None:
        super().__init__(name)
        self.token = token
        self.stamps: list[tuple[str, float]] = []
        self.resume: set[str] = set()
        self.sent_since: list[dict[str, int]] = []
        if reconnect:
            self.sio = socketio.Client(reconnection=True, reconnection_delay=delay,
                                       reconnection_delay_max=max(delay, 0.5), randomization_factor=0.2)
            self.sio.on("*", self._on_event)

    def _on_event(self, event: str, *args: Any) -> None:
        with self._arrived:
            self.stamps.append((event, time.monotonic()))
        super()._on_event(event, *args)

    def _auth(self) -> dict[str, Any]:
        auth: dict[str, Any] = {"token": self.token}
        if self.resume:
            auth["since"] = {room: self.seen_up_to(room) for room in self.resume}
            with self._arrived:
                self.sent_since.append(dict(auth["since"]))
        return auth

    def open(self, url: str, since: dict[str, int] | None = None) -> "Tab":
        """Connect (WebSocket asserted) and wait for `connected`; `since` resumes rooms seen by another tab."""
        if since:
            self.resume.update(since)
            self.sent_since.append(dict(since))
        auth = {"token": self.token, "since": since} if since else self._auth
        self.sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=10)
        assert self.sio.transport() == "websocket"
        self.welcome = self.wait_for("connected")
        return self

    def join(self, room: str) -> dict[str, Any]:
        ack = self.sio.call("join_room", room, timeout=10)
        assert ack["success"], ack
        self.resume.add(room)
        return ack

    def seqs(self, room: str) -> list[int]:
        """The seq of every room_message of `room` received, in arrival order (repeats included)."""
        with self._arrived:
            return [data["seq"] for name, data in self.events if name == "room_message" and data["roomId"] == room]

    def seen_up_to(self, room: str) -> int:
        """The highest seq up to which every message of `room` has arrived."""
        seen = set(self.seqs(room))
        upto = 0
        while upto + 1 in seen:
            upto += 1
        return upto

    def stamped(self, event: str, after: float) -> list[float]:
        with self._arrived:
            return [at for name, at in self.stamps if name == event and at >= after]

    def close(self) -> None:
        self.sio.reconnection = False
        with contextlib.suppress(Exception):
            self.sio.disconnect()


def wait_until(check: Callable[[], Any], timeout: float, message: Callable[[], str] | str = "") -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(message() if callable(message) else message or f"not within {timeout}s")
        time.sleep(0.05)


def close_all(tabs: list[Client]) -> None:
    """Disconnect clients side by side (a client whose server is gone may take a while to give up)."""
    threads = []
    for tab in tabs:
        if isinstance(tab, Tab):
            tab.sio.reconnection = False
        thread = threading.Thread(target=_quietly_disconnect, args=(tab,), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(10)


def _quietly_disconnect(client: Client) -> None:
    with contextlib.suppress(Exception):
        client.sio.disconnect()
