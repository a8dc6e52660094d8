"""A broker outage under load: the servers stay up, report it, and recover by themselves.

Two `nexus serve` instances share MESSAGE_QUEUE_URL on the test Redis (which is then also their
shared live state) or the test RabbitMQ. While a loop of admin broadcasts runs against both, the
broker is stopped (Redis: `redis-cli shutdown nosave`; RabbitMQ: `rabbitmqctl stop_app`) and
started again (Redis with the CI's command; RabbitMQ with `rabbitmqctl start_app`). The instances
must say "unavailable" on /health/ready during the outage and "ready" after it, deliver across
instances again without a restart, keep in the database every broadcast they acknowledged, and
deliver later what they acknowledged during the outage. An emitter that notifies a user during the
outage keeps the event in its outbox and delivers it afterwards.

The broker is always started again, in a `finally`, whatever happens. Stopping the test broker
disturbs anything else using it at the same moment: CI runs the suite in one process.
"""
from __future__ import annotations

import shlex
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from nexus.config import Config
from tests.support.cluster import Client, start_cluster

pytestmark = pytest.mark.live

# The CI's Redis, started exactly as .ci/run does (the port is the test Redis's).
REDIS_START = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port {port} --save "" --appendonly no '
    "--dir /var/lib/redis --logfile /var/log/redis/ci.log"
)
TICK_S = 0.4  # two instances share a per-address HTTP limit: stay well below it
OUTAGE_TICKS = 6  # broadcasts attempted while Redis is down
DETECT_S = 15.0  # the readiness check notices the outage within this
RECOVER_S = 30.0  # ... and the recovery within this (listener backoff, outbox backoff and settle)


class LocalRedis:
    """The test Redis, which this test stops and starts."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        assert parts.hostname in ("127.0.0.1", "localhost", "::1"), f"cannot restart a remote Redis ({url})"
        self.port = parts.port or 6379
        self.start_command = shlex.split(REDIS_START.format(port=self.port))

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True, text=True, timeout=10,
        )

    def answers(self) -> bool:
        try:
            return self.cli("ping").stdout.strip() == "PONG"
        except subprocess.TimeoutExpired:
            return False

    def stop(self) -> None:
        self.cli("shutdown", "nosave")
        wait_until(lambda: not self.answers(), 10, "Redis did not stop")

    def start(self) -> None:
        if self.answers():
            return
        subprocess.run(self.start_command, check=True, capture_output=True, timeout=10)
        wait_until(self.answers, 15, "Redis did not start again")


class LocalRabbit:
    """The test RabbitMQ node (rabbitmqctl's default node, or RABBITMQ_NODENAME), stopped and started."""

    def __init__(self, url: str):
        self.url = url

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)

    def answers(self) -> bool:
        import kombu

        try:
            with kombu.Connection(self.url, connect_timeout=2) as connection:
                connection.ensure_connection(max_retries=0)
            return True
        except Exception:
            return False

    def stop(self) -> None:
        result = self.ctl("stop_app")
        assert result.returncode == 0, result.stdout + result.stderr
        wait_until(lambda: not self.answers(), 20, "RabbitMQ did not stop")

    def start(self) -> None:
        if self.answers():
            return
        result = self.ctl("start_app")
        assert result.returncode == 0, result.stdout + result.stderr
        wait_until(self.answers, 60, "RabbitMQ did not start again", every=0.5)


BROKERS = {"redis": LocalRedis, "rabbitmq": LocalRabbit}


def wait_until(condition, timeout: float, message: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(every)


def readiness(server: Any) -> tuple[int, dict[str, Any]]:
    try:
        response = requests.get(server.url + "/health/ready", timeout=5)
    except requests.RequestException as exc:
        return 0, {"error": str(exc)}
    return response.status_code, response.json()


@dataclass
class Ticker:
    """Admin broadcasts to alternating instances, every TICK_S, recording every answer."""

    servers: list[Any]
    token: str
    phase: str = "before"
    sent: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> Ticker:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            server = self.servers[n % len(self.servers)]
            phase = self.phase
            text = f"tick {n} via {server.instance_id} ({phase})"
            began = time.monotonic()
            try:
                response = requests.post(
                    server.url + "/api/admin/broadcast",
                    json={"kind": "system", "message": text},
                    headers={"Authorization": f"Bearer {self.token}"},
                    timeout=10,
                )
                status, body = response.status_code, response.json()
            except (requests.RequestException, ValueError) as exc:
                status, body = 0, {"error": str(exc)}
            record = {
                "n": n, "server": server.instance_id, "phase": phase, "text": text, "status": status,
                "body": body, "took": time.monotonic() - began,
            }
            with self._changed:
                self.sent.append(record)
                self._changed.notify_all()
            self._stop.wait(TICK_S)

    def wait_for(self, phase: str, count: int, timeout: float) -> None:
        with self._changed:
            ok = self._changed.wait_for(lambda: len(self.in_phase(phase)) >= count, timeout)
        assert ok, f"fewer than {count} broadcasts attempted in phase {phase!r}: {self.sent}"

    def in_phase(self, phase: str) -> list[dict[str, Any]]:
        return [record for record in self.sent if record["phase"] == phase]


def from_other_instance(receiver: Client, ticker: Ticker, phase: str):
    """Matches a tick of `phase` sent through the instance that does not serve `receiver`."""
    own = receiver.welcome["instanceId"]
    return lambda data: f"({phase})" in data.get("message", "") and f"via {own} " not in data["message"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "broker",
    [pytest.param("redis", marks=pytest.mark.redis), pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)],
)
def test_a_broker_outage_is_reported_and_both_instances_recover_by_themselves(
    broker, mq, live_server, clients, tmp_path
):
    service = BROKERS[broker](mq.url)
    cluster = start_cluster(live_server, mq.env)
    a, b = cluster.a, cluster.b
    alice = clients("alice@A", a, cluster.token("alice"))
    carol = clients("carol@B", b, cluster.token("carol"))
    assert alice.welcome["instanceId"] == a.instance_id and carol.welcome["instanceId"] == b.instance_id
    assert alice.sio.transport() == carol.sio.transport() == "websocket"
    mq.wait_until_listening(alice, carol)
    shared_state = "ok" if broker == "redis" else "disabled"  # a redis:// queue is the shared state too
    for server in (a, b):
        status, body = readiness(server)
        assert status == 200, body
        assert {name: check["status"] for name, check in body["checks"].items()} == {
            "instance": "ok", "database": "ok", "messageQueue": "ok", "sharedState": shared_state
        }

    emitter = _emitter(cluster, live_server, mq, tmp_path)
    alice_id = cluster.seeder.user("alice")["id"]
    ticker = Ticker([a, b], cluster.token("root")).start()
    try:
        # Before: broadcasts cross instances.
        alice.wait_for("system_message", from_other_instance(alice, ticker, "before"))
        carol.wait_for("system_message", from_other_instance(carol, ticker, "before"))

        try:
            service.stop()
            ticker.phase = "outage"
            # Readiness says so on both instances, naming the queue (and the shared state on Redis).
            for server in (a, b):
                down: dict[str, Any] = {}

                def reports_outage(server=server, down=down) -> bool:
                    status, body = readiness(server)
                    down.update(body)
                    return status == 503 and body["checks"]["messageQueue"]["status"] == "failing"

                wait_until(reports_outage, DETECT_S, f"{server.instance_id} never reported the outage: {down}")
                assert down["status"] == "unavailable"
                assert "messageQueue" in down["failing"]
                assert ("sharedState" in down["failing"]) is (broker == "redis")
                assert down["checks"]["messageQueue"]["since"]
                assert down["checks"]["messageQueue"]["listening"] is False
                assert down["checks"]["database"]["status"] == "ok"

            # An emitter's notification during the outage: saved now, kept in its outbox.
            began = time.monotonic()
            during = emitter.notify(alice_id, "During the outage", f"kept {uuid.uuid4().hex}")
            assert time.monotonic() - began < 3, "a notify during an outage must not wait for the broker"
            assert emitter.queue_status()["ok"] is False and emitter.queue_status()["pending"] >= 1

            ticker.wait_for("outage", OUTAGE_TICKS, timeout=OUTAGE_TICKS * 5 + 10)
        finally:
            service.start()
        ticker.phase = "after"

        for server in (a, b):
            up: dict[str, Any] = {}

            def reports_ready(server=server, up=up) -> bool:
                status, body = readiness(server)
                up.update(body)
                return status == 200

            wait_until(reports_ready, RECOVER_S, f"{server.instance_id} did not become ready again: {up}")
            assert up["checks"]["messageQueue"]["status"] == "ok"

        # Delivery across instances resumes by itself, both ways, on the same sockets.
        alice.wait_for("system_message", from_other_instance(alice, ticker, "after"), timeout=RECOVER_S)
        carol.wait_for("system_message", from_other_instance(carol, ticker, "after"), timeout=RECOVER_S)
        assert alice.sio.connected and carol.sio.connected
        assert alice.sio.transport() == carol.sio.transport() == "websocket"

        # The emitter's notification went out when the broker was back, to alice only.
        assert emitter.flush(RECOVER_S + 15) is True
        got = alice.wait_for("notification", lambda data: data["id"] == during["id"], timeout=RECOVER_S)
        assert got["message"] == during["message"] and got["from"]["name"] == "service:outage-test"
        assert all(data.get("id") != during["id"] for data in carol.received("notification"))
    finally:
        ticker.stop()
        emitter.close(1)

    # Both instances are still up, and a new connection works.
    assert a.process.poll() is None and b.process.poll() is None
    dave = clients("dave@B", b, cluster.token("dave"))
    assert dave.sio.transport() == "websocket"
    final = f"after everything {uuid.uuid4().hex}"
    response = requests.post(
        a.url + "/api/admin/broadcast", json={"kind": "system", "message": final},
        headers={"Authorization": f"Bearer {cluster.token('root')}"}, timeout=10,
    )
    assert response.status_code == 200, response.text
    for client in (alice, carol, dave):
        assert client.wait_for("system_message", lambda data: data["message"] == final)["message"] == final

    # Nothing an instance acknowledged is lost from the database ...
    acknowledged = [r for r in ticker.sent if r["status"] == 200]
    assert ticker.in_phase("before") and ticker.in_phase("after") and acknowledged
    stored = _stored_broadcasts(cluster)
    missing = [r for r in acknowledged if r["body"]["broadcast"]["broadcastId"] not in stored]
    assert not missing, f"acknowledged but not in the database: {missing}"
    for record in acknowledged:
        assert stored[record["body"]["broadcast"]["broadcastId"]] == record["text"]
    # ... and what they acknowledged during the outage was delivered afterwards, on both instances,
    # from their outboxes (the sending instance's own clients got it at once).
    outage = ticker.in_phase("outage")
    for record in (r for r in outage if r["status"] == 200):
        for client in (alice, carol):
            client.wait_for("system_message", lambda data, text=record["text"]: data["message"] == text)
    print(
        f"{broker} outage: {sum(r['status'] == 200 for r in outage)}/{len(outage)} broadcasts acknowledged "
        f"during it, answers {sorted({r['status'] for r in outage})}, slowest {max(r['took'] for r in outage):.2f}s"
    )


def _emitter(cluster, live_server, mq, tmp_path):
    from nexus.emitter import Emitter

    config = Config.from_env(
        {
            "DATABASE_URL": cluster.database_url,
            "JWT_SECRET": live_server.secret,
            "NEXUS_INSTANCE_PATH": str(tmp_path / "emitter"),
            "NEXUS_INSTANCE_ID": "outage-emitter",
            **mq.env,
        }
    )
    return Emitter(config, name="outage-test")


def _stored_broadcasts(cluster) -> dict[str, str]:
    from sqlalchemy import select

    from nexus.extensions import db
    from nexus.models import Broadcast

    with cluster.seeder.app.app_context():
        rows = db.session.execute(select(Broadcast.id, Broadcast.payload)).all()
        db.session.remove()
    return {str(row_id): (payload or {}).get("message") for row_id, payload in rows}
