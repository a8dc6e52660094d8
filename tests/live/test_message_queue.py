"""Several Nexus processes on one message queue (Redis or RabbitMQ) behave as one server.

Every test runs real `nexus serve` processes and python-socketio clients over WebSocket.
Each test gets its own queue channel (SOCKETIO_REDIS_PREFIX), so tests never see each
other's traffic, and the channel's broker objects are removed afterwards.

python-socketio would start an instance's queue listener only when the first client
connects; Nexus subscribes at start (test_an_instance_listens_from_its_start). The
subscription still completes a moment after the server answers, so before a test relies
on cross-instance delivery it waits, event-driven, until a probe published on the queue
(from this process) has reached each client it is about to count on.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pytest
import requests
import socketio

from nexus.config import Config
from nexus.realtime import queue
from tests.support import services

pytestmark = pytest.mark.live

RECEIPT_TIMEOUT = 10.0  # positive assertions: generous, returns as soon as the event arrives
ABSENCE_WINDOW = 1.0  # negative assertions: checked after a positive receipt proved delivery happened
PROBE_EVENT = "mq_test_probe"

BROKERS = {"redis": services.REDIS_URL, "rabbitmq": services.AMQP_URL}
broker_params = pytest.mark.parametrize(
    "broker",
    [pytest.param("redis", marks=pytest.mark.redis), pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)],
)


# -- clients -------------------------------------------------------------------------


class Client:
    """A python-socketio WebSocket client that records every event it receives."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sio = socketio.Client(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.welcome: dict[str, Any] = {}
        self._arrived = threading.Condition()
        self.sio.on("*", self._on_event)

    def __repr__(self) -> str:
        return f"<Client {self.name}>"

    def _on_event(self, event: str, *args: Any) -> None:
        with self._arrived:
            self.events.append((event, args[0] if len(args) == 1 else list(args)))
            self._arrived.notify_all()

    def connect(self, url: str, token: str | None) -> "Client":
        self.sio.connect(url, auth={"token": token} if token else None, transports=["websocket"], wait_timeout=10)
        assert self.sio.transport() == "websocket"
        # The welcome is sent after the server put the socket in its managed rooms.
        self.welcome = self.wait_for("connected")
        return self

    @property
    def sid(self) -> str:
        return self.sio.get_sid()

    def received(self, event: str) -> list[Any]:
        with self._arrived:
            return [data for name, data in self.events if name == event]

    def wait_for(
        self, event: str, match: Callable[[Any], bool] = lambda _: True, timeout: float = RECEIPT_TIMEOUT
    ) -> Any:
        """The first `event` whose data satisfies `match`; fails after `timeout` seconds."""
        found: list[Any] = []

        def arrived() -> bool:
            found[:] = [data for name, data in self.events if name == event and match(data)]
            return bool(found)

        with self._arrived:
            ok = self._arrived.wait_for(arrived, timeout)
        assert ok, f"{self.name}: no matching {event!r} within {timeout}s; got {self._non_probe_events()}"
        return found[0]

    def wait_for_any(self, event: str, match: Callable[[Any], bool], timeout: float) -> bool:
        with self._arrived:
            return self._arrived.wait_for(
                lambda: any(name == event and match(data) for name, data in self.events), timeout
            )

    def assert_never_gets(self, event: str, deadline: float) -> None:
        """No `event` until `deadline` (time.monotonic()); returns early, failing, if one arrives."""
        with self._arrived:
            while time.monotonic() < deadline:
                if any(name == event for name, _ in self.events):
                    break
                self._arrived.wait(max(0.0, deadline - time.monotonic()))
            unexpected = [data for name, data in self.events if name == event]
        assert not unexpected, f"{self.name} must not receive {event!r}, got {unexpected}"

    def _non_probe_events(self) -> list[tuple[str, Any]]:
        return [(name, data) for name, data in self.events if name != PROBE_EVENT]


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


def assert_none_receive(event: str, *clients: Client, window: float = ABSENCE_WINDOW) -> None:
    """One shared bounded window in which none of the clients may receive `event`."""
    deadline = time.monotonic() + window
    for client in clients:
        client.assert_never_gets(event, deadline)


# -- the queue -----------------------------------------------------------------------


@dataclass
class MessageQueue:
    """A broker URL and a channel of its own, with a write-only emitter for readiness probes."""

    broker: str
    url: str
    channel: str

    def __post_init__(self) -> None:
        self.manager = queue.client_manager(
            Config(message_queue_url=self.url, queue_channel=self.channel), write_only=True
        )
        self._nonce = itertools.count(1)

    @property
    def env(self) -> dict[str, str]:
        return {"MESSAGE_QUEUE_URL": self.url, "SOCKETIO_REDIS_PREFIX": self.channel}

    def wait_until_listening(self, *clients: Client, timeout: float = 20.0) -> None:
        """Probe each client's own room through the queue until one probe arrives.

        A probe that arrives proves the instance serving that client is subscribed to the
        channel, so anything published afterwards reaches it.
        """
        deadline = time.monotonic() + timeout
        for client in clients:
            while True:
                nonce = f"{client.sid}-{next(self._nonce)}"
                self.manager.emit(PROBE_EVENT, {"nonce": nonce}, room=client.sid, namespace="/")
                if client.wait_for_any(PROBE_EVENT, lambda data: True, timeout=0.2):
                    break
                assert time.monotonic() < deadline, (
                    f"{client.name}'s server never received from the {self.broker} queue "
                    f"(channel {self.channel}) within {timeout}s"
                )

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.manager.publisher_connection.release()
        with contextlib.suppress(Exception):
            if self.broker == "redis":
                import redis

                connection = redis.Redis.from_url(self.url)
                keys = list(connection.scan_iter(match=f"*{self.channel}*"))
                if keys:
                    connection.delete(*keys)
                connection.close()
            else:
                import kombu

                with kombu.Connection(self.url, connect_timeout=5) as connection:
                    kombu.Exchange(self.channel, type="fanout", durable=False)(connection.default_channel).delete()


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


@dataclass
class Cluster:
    """Two Nexus processes on one database (and, when given, one queue channel)."""

    database_url: str
    seeder: Any
    a: Any
    b: Any

    def token(self, username: str) -> str:
        return self.seeder.token(username)


def start_cluster(live_server, env: dict[str, str] | None) -> Cluster:
    url, seeder = live_server.database()
    seeder.user("root", role="admin")
    seeder.user("alice", department="sales")
    seeder.user("carol", department="sales")
    seeder.user("bob", department="engineering")
    seeder.user("dave", department="engineering")
    a = live_server.start(url, env=env)
    b = live_server.start(url, env=env)
    a.instance_id = requests.get(a.url + "/health", timeout=5).json()["instanceId"]
    b.instance_id = requests.get(b.url + "/health", timeout=5).json()["instanceId"]
    assert a.instance_id != b.instance_id
    return Cluster(url, seeder, a, b)


@pytest.fixture
def cluster(mq, live_server) -> Cluster:
    # `mq` is set up first so that it is torn down last, after the servers have stopped.
    return start_cluster(live_server, mq.env)


def broadcast(server: Any, token: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(
        server.url + "/api/admin/broadcast", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def assert_broadcast_ok(server: Any, token: str, body: dict[str, Any]) -> dict[str, Any]:
    response = broadcast(server, token, body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["success"] is True and result["kind"] == body["kind"], result
    return result["broadcast"]


def on(server: Any, client: Client) -> Client:
    """Check that a client really is served by that instance."""
    assert client.welcome["instanceId"] == server.instance_id, (client, client.welcome)
    return client


# -- tests ---------------------------------------------------------------------------


@broker_params
def test_system_broadcast_on_a_reaches_users_on_b_but_not_guests(broker, mq, cluster, clients):
    alice = on(cluster.b, clients("alice", cluster.b, cluster.token("alice")))
    guest = on(cluster.b, clients("guest", cluster.b))
    assert guest.welcome["guest"] is True
    mq.wait_until_listening(alice, guest)

    # A non-admin is refused and nothing is sent.
    refused = broadcast(cluster.a, cluster.token("alice"), {"kind": "system", "message": "not from alice"})
    assert refused.status_code == 403
    assert refused.json()["success"] is False
    assert refused.json()["error"]["code"] == "FORBIDDEN"

    text = f"maintenance at noon ({broker}) {uuid.uuid4().hex}"
    sent = assert_broadcast_ok(cluster.a, cluster.token("root"), {"kind": "system", "message": text})

    got = alice.wait_for("system_message")
    assert got == sent
    assert got["type"] == "system"
    assert got["message"] == text
    assert got["from"]["username"] == "root"
    assert got["timestamp"]
    assert_none_receive("system_message", guest)
    assert alice.received("system_message") == [sent]  # once, and never the refused one
    assert alice.sio.transport() == guest.sio.transport() == "websocket"


@broker_params
def test_department_broadcast_reaches_the_department_on_every_instance_only(broker, mq, cluster, clients):
    admin = cluster.token("root")
    alice = on(cluster.b, clients("alice(sales)@B", cluster.b, cluster.token("alice")))
    carol = on(cluster.a, clients("carol(sales)@A", cluster.a, cluster.token("carol")))
    bob = on(cluster.a, clients("bob(engineering)@A", cluster.a, cluster.token("bob")))
    dave = on(cluster.b, clients("dave(engineering)@B", cluster.b, cluster.token("dave")))
    mq.wait_until_listening(alice, carol, bob, dave)

    text = f"sales kick-off {uuid.uuid4().hex}"
    sent = assert_broadcast_ok(
        cluster.a, admin, {"kind": "department", "department": "sales", "message": text}
    )
    assert sent["department"] == "sales"

    for member in (alice, carol):
        got = member.wait_for("department_message")
        assert got == sent
        assert got["message"] == text and got["department"] == "sales" and got["type"] == "department"
    assert_none_receive("department_message", bob, dave)
    for client in (alice, carol, bob, dave):
        assert client.sio.transport() == "websocket"


@broker_params
def test_emit_cli_reaches_the_named_room_on_both_instances(broker, mq, cluster, clients, live_server, tmp_path):
    alice = on(cluster.b, clients("alice(sales)@B", cluster.b, cluster.token("alice")))
    carol = on(cluster.a, clients("carol(sales)@A", cluster.a, cluster.token("carol")))
    bob = on(cluster.a, clients("bob(engineering)@A", cluster.a, cluster.token("bob")))
    guest = on(cluster.b, clients("guest@B", cluster.b))
    mq.wait_until_listening(alice, carol, bob, guest)

    payload = {
        "notice": f"deploy {uuid.uuid4().hex}",
        "count": 3,
        "ratio": 0.5,
        "ok": True,
        "none": None,
        "tags": ["a", "b"],
        "nested": {"k": [1, {"x": "é✓"}]},
    }
    result = run_nexus(
        ["emit", "deploy_notice", "--room", "department_sales", "--data", json.dumps(payload)],
        cli_env(live_server, cluster, tmp_path, mq.env),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "emitted deploy_notice to department_sales on /" in result.stdout

    for member in (alice, carol):
        assert member.wait_for("deploy_notice") == payload
    assert_none_receive("deploy_notice", bob, guest)
    assert alice.received("deploy_notice") == carol.received("deploy_notice") == [payload]  # exactly once
    for client in (alice, carol, bob, guest):
        assert client.sio.transport() == "websocket"


@broker_params
def test_an_instance_listens_from_its_start(broker, mq, live_server, clients):
    url, seeder = live_server.database()
    seeder.user("alice")
    server = live_server.start(url, env=mq.env)
    alice = clients("alice", server, seeder.token("alice"))
    # No probe: the very first publication after the first connection must arrive.
    mq.manager.emit("first_words", {"n": 1}, room="all_users", namespace="/")
    assert alice.wait_for("first_words") == {"n": 1}


def test_without_a_shared_queue_instances_are_islands(live_server, clients):
    cluster = start_cluster(live_server, env=None)
    carol = on(cluster.a, clients("carol@A", cluster.a, cluster.token("carol")))
    alice = on(cluster.b, clients("alice@B", cluster.b, cluster.token("alice")))

    text = f"only on A {uuid.uuid4().hex}"
    sent = assert_broadcast_ok(cluster.a, cluster.token("root"), {"kind": "system", "message": text})

    # Delivery on A happened (so the broadcast was really sent) ...
    assert carol.wait_for("system_message") == sent
    # ... and it stays on A.
    assert_none_receive("system_message", alice)
    assert alice.sio.transport() == carol.sio.transport() == "websocket"


def test_emit_cli_without_a_queue_refuses(live_server, tmp_path):
    url, _seeder = live_server.database()
    env = cli_env(live_server, None, tmp_path, {}, database_url=url)
    result = run_nexus(["emit", "deploy_notice", "--room", "all_users", "--data", "{}"], env)
    assert result.returncode != 0
    assert "MESSAGE_QUEUE_URL is not set" in result.stderr


# -- the CLI process -----------------------------------------------------------------


def cli_env(
    live_server, cluster: Cluster | None, tmp_path, extra: dict[str, str], *, database_url: str | None = None
) -> dict[str, str]:
    """The environment of a server of this factory (see LiveServerFactory.start), for `nexus emit`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEXUS_", "SOCKETIO_", "REDIS_"))}
    env.pop("MESSAGE_QUEUE_URL", None)
    env.update(
        {
            "DATABASE_URL": database_url or cluster.database_url,
            "JWT_SECRET": live_server.secret,
            "NEXUS_ENV": "development",
            "NEXUS_INSTANCE_PATH": str(tmp_path / "cli-instance"),
            "NEXUS_INSTANCE_ID": "live-cli",
            "NEXUS_DEMO_USERS": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def run_nexus(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nexus", *args],
        cwd=services.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
