"""Chat across two instances on one Redis: live membership counted once, and catch-up during a flood."""
from __future__ import annotations

import threading

import pytest
import socketio

from tests.support import services
from tests.support.cluster import Cluster, start_cluster

pytestmark = [pytest.mark.live, pytest.mark.redis]

FLOOD = 120


@pytest.fixture
def redis_cluster(redis_channel, live_server):  # the channel is cleaned up after the servers stop
    return start_cluster(live_server, {"MESSAGE_QUEUE_URL": services.REDIS_URL, "SOCKETIO_REDIS_PREFIX": redis_channel})


def test_live_membership_is_counted_once_across_instances(redis_cluster: Cluster, clients):
    cluster = redis_cluster
    alice = clients("alice@A", cluster.a, cluster.token("alice"))
    bob = clients("bob@B", cluster.b, cluster.token("bob"))
    bob_again = clients("bob@A", cluster.a, cluster.token("bob"))
    assert alice.sio.call("join_room", "general", timeout=10)["memberCount"] == 1
    assert bob.sio.call("join_room", {"room": "general"}, timeout=10)["memberCount"] == 2
    joined = alice.wait_for("room_joined")
    assert joined["user"]["username"] == "bob" and joined["memberCount"] == 2
    # Bob's second socket, on the other instance, does not count again or announce again.
    assert bob_again.sio.call("join_room", "general", timeout=10)["memberCount"] == 2
    alice.assert_count_stays("room_joined", 1)
    info = alice.sio.call("room_info", "general", timeout=10)["room"]
    assert info["liveMemberCount"] == 2
    assert {m["username"]: m["inRoom"] for m in info["members"]} == {"alice": True, "bob": True}
    sent = bob.sio.call("send_message", {"roomId": "general", "content": "across"}, timeout=10)
    assert alice.wait_for("room_message")["id"] == sent["message"]["id"]
    # Bob leaves on B but is still in the room on A: nobody is told he left.
    bob.sio.call("leave_room", "general", timeout=10)
    alice.assert_count_stays("room_left", 0)
    bob_again.sio.call("leave_room", "general", timeout=10)
    assert alice.wait_for("room_left")["memberCount"] == 1


def test_catch_up_during_a_flood_from_another_instance_is_exact(redis_cluster: Cluster, clients):
    """Alice on A drops and rejoins three times while carol floods from B: every seq once, in order."""
    cluster = redis_cluster
    carol = clients("carol@B", cluster.b, cluster.token("carol"))
    assert carol.sio.call("join_room", "general", timeout=10)["success"]
    seqs: list[int] = []
    lock = threading.Condition()

    def record(message):
        with lock:
            seqs.append(message["seq"])
            lock.notify_all()

    def connect(since: int | None) -> socketio.Client:
        sio = socketio.Client(reconnection=False)
        sio.on("room_message", record)
        auth = {"token": cluster.token("alice")}
        if since is not None:
            auth["since"] = {"general": since}
        sio.connect(cluster.a.url, auth=auth, transports=["websocket"], wait_timeout=10)
        assert sio.transport() == "websocket"
        if since is None:
            assert sio.call("join_room", "general", timeout=10)["success"]
        return sio

    alice = connect(None)
    flood_done = threading.Event()

    def flood():
        for i in range(FLOOD):
            ack = carol.sio.call("send_message", {"roomId": "general", "content": f"m{i}"}, timeout=10)
            assert ack["success"], ack
        flood_done.set()

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    for threshold in (20, 50, 80):
        with lock:
            assert lock.wait_for(lambda: len(seqs) >= threshold, 20), seqs
        alice.disconnect()
        with lock:
            last_seen = seqs[-1]
        alice = connect(last_seen)
    assert flood_done.wait(60)
    with lock:
        assert lock.wait_for(lambda: seqs and seqs[-1] >= FLOOD, 20), seqs[-10:]
    alice.disconnect()
    assert seqs == list(range(1, FLOOD + 1))
