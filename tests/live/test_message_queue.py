"""Several Nexus processes on one message queue (Redis or RabbitMQ) behave as one server.

Every test runs real `nexus serve` processes and python-socketio clients over WebSocket.
Each test gets its own queue channel (SOCKETIO_REDIS_PREFIX), so tests never see each
other's traffic, and the channel's broker objects are removed afterwards.

python-socketio would start an instance's queue listener only when the first client
connects; Nexus subscribes at start (test_an_instance_listens_from_its_start). The
server starts answering only once a probe it published has come back through the queue.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
import requests

from tests.support import services
from tests.support.cluster import Client, Cluster, assert_none_receive, start_cluster

pytestmark = pytest.mark.live

broker_params = pytest.mark.parametrize(
    "broker",
    [pytest.param("redis", marks=pytest.mark.redis), pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)],
)


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
    assert got["from"]["name"] == "root"
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
    # The server waited for its own probe to come back through the queue before it served.
    assert "did not answer" not in server.log()


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
