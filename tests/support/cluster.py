"""Several Nexus processes on one database and one message queue, and clients that record what they get."""
from __future__ import annotations

import contextlib
import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import requests
import socketio

from nexus.config import Config
from nexus.realtime import queue
from tests.support import services

RECEIPT_TIMEOUT = 10.0  # positive assertions: generous, returns as soon as the event arrives
ABSENCE_WINDOW = 1.0  # negative assertions: checked after a positive receipt proved delivery happened
PROBE_EVENT = "mq_test_probe"
BROKERS = {"redis": services.REDIS_URL, "rabbitmq": services.AMQP_URL}


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

    def assert_count_stays(self, event: str, count: int, window: float = ABSENCE_WINDOW) -> None:
        """Exactly `count` of `event` have arrived, and no more arrive within `window` seconds."""
        with self._arrived:
            self._arrived.wait_for(lambda: len([1 for name, _ in self.events if name == event]) > count, window)
            got = [data for name, data in self.events if name == event]
        assert len(got) == count, f"{self.name}: {count} x {event!r} expected, got {got}"

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
