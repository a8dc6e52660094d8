"""Protection against real clients: rate limits shared by instances, long-polling body limits."""
from __future__ import annotations

import uuid

import pytest
import requests

from tests.support import services
from tests.support.cluster import Client, start_cluster

pytestmark = pytest.mark.live


@pytest.mark.redis
def test_the_event_allowance_is_shared_by_instances_and_survives_reconnects(live_server):
    services.require("redis")
    channel = f"nexus-test-{uuid.uuid4().hex}"
    env = {
        "MESSAGE_QUEUE_URL": services.REDIS_URL,
        "SOCKETIO_REDIS_PREFIX": channel,
        "SOCKETIO_RATE_LIMIT_MAX_REQUESTS": "6",
        "SOCKETIO_RATE_LIMIT_WINDOW_MS": "60000",
    }
    cluster = start_cluster(live_server, env)
    made: list[Client] = []
    try:
        on_a = Client("alice@A").connect(cluster.a.url, cluster.token("alice"))
        made.append(on_a)
        for _ in range(4):
            assert on_a.sio.call("ping", timeout=10)["success"]
        on_a.sio.disconnect()
        # A new socket, on the other instance: the same user, the same (nearly spent) allowance.
        on_b = Client("alice@B").connect(cluster.b.url, cluster.token("alice"))
        made.append(on_b)
        assert on_b.sio.call("ping", timeout=10)["success"]
        assert on_b.sio.call("ping", timeout=10)["success"]
        refused = on_b.sio.call("ping", timeout=10)
        assert refused["error"]["code"] == "RATE_LIMITED" and refused["error"]["details"]["retryAfterMs"] > 0
        notice = on_b.wait_for("rate_limit_exceeded")
        assert notice["event"] == "ping"
        on_b.sio.call("ping", timeout=10)
        on_b.assert_count_stays("rate_limit_exceeded", 1)
        # Someone else is not affected.
        bob = Client("bob@B").connect(cluster.b.url, cluster.token("bob"))
        made.append(bob)
        assert bob.sio.call("ping", timeout=10)["success"] and bob.sio.transport() == "websocket"
    finally:
        for client in made:
            try:
                client.sio.disconnect()
            except Exception:  # noqa: BLE001 - already closed
                pass
        import redis

        connection = redis.Redis.from_url(services.REDIS_URL)
        keys = list(connection.scan_iter(match=f"{channel}*"))
        if keys:
            connection.delete(*keys)


def test_a_long_polling_body_over_the_limit_is_refused(live_server):
    url, _seeder = live_server.database()
    server = live_server.start(url, env={"SOCKETIO_MAX_PAYLOAD": "100000"})
    base = server.url + "/socket.io/?EIO=4&transport=polling"
    opened = requests.get(base, timeout=5)
    sid = opened.text[opened.text.index("{"):].split('"sid":"')[1].split('"')[0]
    big = requests.post(f"{base}&sid={sid}", data="4" + "x" * 200_000, timeout=10)
    assert big.status_code == 413
    # That session is over (aborted, not left waiting for a poll), and the refusal is logged.
    assert requests.get(f"{base}&sid={sid}", timeout=5).status_code == 400
    assert "refused a long-polling body of 200001 bytes" in server.log()
    # The server goes on serving others.
    assert requests.get(server.url + "/health", timeout=5).status_code == 200
    assert requests.get(base, timeout=5).status_code == 200
