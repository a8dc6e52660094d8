"""Fixtures: app, db, client, runner, socket clients, the broadcast recorder, and live servers."""
from __future__ import annotations

import contextlib
import os
import secrets
import uuid
from typing import Any, Callable, Iterator

import pytest

from nexus import create_app
from nexus.config import Config, normalize_database_url
from nexus.extensions import db as _db
from nexus.extensions import socketio
from nexus.realtime import broadcast
from tests.support import services
from tests.support.cluster import BROKERS, Client, MessageQueue
from tests.support.live import LiveServerFactory, database_for_test
from tests.support.openapi import DocumentedClient

TEST_SECRET = "test-secret-" + "x" * 40


def make_config(tmp_path, **overrides: Any) -> Config:
    """A testing Config: SQLite in a temp folder unless DATABASE_URL names PostgreSQL."""
    values: dict[str, Any] = dict(
        env="testing",
        instance_path=str(tmp_path / "instance"),
        database_url=normalize_database_url(services.unit_database_url(tmp_path), str(tmp_path)),
        jwt_secret=TEST_SECRET,
        async_mode="threading",
        auto_migrate=False,
        create_demo_users=False,
        message_queue_url=None,
        redis_url=None,
        instance_id="test-instance",
    )
    values.update(overrides)
    return Config.from_env({}, **values)


@pytest.fixture
def config_factory(tmp_path) -> Callable[..., Config]:
    return lambda **overrides: make_config(tmp_path, **overrides)


@pytest.fixture
def app_factory(tmp_path) -> Iterator[Callable[..., Any]]:
    """Build apps with overrides; each gets its tables created and dropped."""
    built = []

    def build(**overrides: Any):
        app = create_app(make_config(tmp_path, **overrides))
        with app.app_context():
            _db.create_all()
        built.append(app)
        return app

    yield build
    for app in built:
        with app.app_context():
            _db.session.remove()
            _db.drop_all()
            _db.engine.dispose()


@pytest.fixture
def app(app_factory):
    return app_factory()


@pytest.fixture
def db(app):
    with app.app_context():
        yield _db


@pytest.fixture
def client(app):
    """Flask's test client; every REST answer it gets is checked against the OpenAPI document."""
    app.test_client_class = DocumentedClient
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def make_user(db) -> Callable[..., Any]:
    """Create accounts with a known password."""
    from nexus.services.users import create_user

    counter = iter(range(1, 10_000))

    def make(username: str | None = None, *, password: str = "correct-horse-1", role: str = "user", **fields):
        name = username or f"user{next(counter)}"
        user = create_user(name, password, role=role, **fields)
        user.plain_password = password
        return user

    return make


@pytest.fixture
def token_for(app) -> Callable[[Any], str]:
    from nexus.services.tokens import issue_access_token

    def token(user) -> str:
        with app.app_context():
            return issue_access_token(_db.session.merge(user))

    return token


@pytest.fixture
def socket_client(app) -> Iterator[Callable[..., Any]]:
    """Flask-SocketIO test clients; disconnected at the end."""
    clients = []

    def connect(*, token: str | None = None, query_token: str | None = None, namespace: str = "/", auth=None):
        query = f"token={query_token}" if query_token else None
        if auth is None and token is not None:
            auth = {"token": token}
        test_client = socketio.test_client(app, namespace=namespace, query_string=query, auth=auth)
        clients.append(test_client)
        return test_client

    yield connect
    for test_client in clients:
        if test_client.is_connected():
            test_client.disconnect()


class BroadcastRecorder:
    """Stands in for the Socket.IO transport: keeps every emission for assertions."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def emit(self, event, data, *, room, namespace, skip_sid, local=False) -> None:
        self.sent.append(
            {"event": event, "data": data, "room": room, "namespace": namespace, "skip_sid": skip_sid, "local": local}
        )

    def events(self, name: str, namespace: str = "/") -> list[dict[str, Any]]:
        """Emissions of one event on one namespace (each namespace that serves an event gets a copy)."""
        return [item for item in self.sent if item["event"] == name and item["namespace"] == namespace]


@pytest.fixture
def broadcasts(app) -> BroadcastRecorder:
    recorder = BroadcastRecorder()
    app.extensions["nexus.broadcaster"] = broadcast.Broadcaster(
        recorder, app.extensions["nexus.broadcaster"].namespaces
    )
    return recorder


@pytest.fixture
def live_server(tmp_path) -> Iterator[LiveServerFactory]:
    """Start Nexus as real processes (`nexus serve` or gunicorn) on free ports."""
    factory = LiveServerFactory(tmp_path, secret=secrets.token_urlsafe(40))
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def live_database(tmp_path) -> Iterator[str]:
    """A fresh database URL for live servers: a SQLite file, or a new PostgreSQL database."""
    with database_for_test(tmp_path) as url:
        yield url


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    """Make clients; every one is disconnected at teardown."""
    made: list[Client] = []

    def connect(name: str, server: Any, token: str | None = None) -> Client:
        client = Client(name)
        made.append(client)
        return client.connect(server.url, token)

    yield connect
    for client in made:
        with contextlib.suppress(Exception):
            client.sio.disconnect()

@pytest.fixture
def mq(broker: str) -> Iterator[MessageQueue]:
    """The broker of the `broker` parameter on a fresh channel (skip, or fail in CI, when it is down)."""
    services.require(broker)
    channel = f"nexus-test-{uuid.uuid4().hex}"
    message_queue = MessageQueue(broker, BROKERS[broker], channel)
    try:
        yield message_queue
    finally:
        message_queue.cleanup()


@pytest.fixture
def redis_channel() -> Iterator[str]:
    """A channel of its own on the local Redis, cleaned up afterwards (see services.redis_channel)."""
    with services.redis_channel() as channel:
        yield channel


def pytest_report_header(config) -> list[str]:
    url = os.environ.get("DATABASE_URL")
    return [f"nexus database: {'PostgreSQL (' + url.split('@')[-1] + ')' if url else 'SQLite'}"]


# -- modules that attack a server of their own (a `server` fixture each): tests/security, tests/protocol


@pytest.fixture
def control(server) -> Iterator[Any]:
    """A control client (its own user and room) on the module's server, connected before the attack;
    the test calls `control.assert_unharmed()` after it."""
    from tests.security.attack import Control

    made = Control(server)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def log_after(server) -> Callable[[], str]:
    """The log the module's server writes from now on (read it after the control client's check: that
    round trip lets anything the attack caused reach the log first)."""
    start = len(server.log())
    return lambda: server.log()[start:]
