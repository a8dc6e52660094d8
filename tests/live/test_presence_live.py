"""Presence over real servers and python-socketio clients (WebSocket asserted), one instance and two on Redis."""
from __future__ import annotations

import signal
import time

import pytest
import requests

from tests.support import services
from tests.support.cluster import Client, assert_none_receive

pytestmark = pytest.mark.live


@pytest.fixture
def presence_server(live_server):
    url, seeder = live_server.database()
    for name in ("alice", "bob", "carol"):
        seeder.user(name)
    server = live_server.start(url, env={"NEXUS_AWAY_AFTER_S": "2"})
    server.seeder = seeder
    return server


def user_id(server, name: str) -> str:
    return str(server.seeder.user(name)["id"])


def test_two_tabs_of_one_user_are_online_once_and_offline_once(presence_server, clients):
    server = presence_server
    bob = clients("bob", server, server.seeder.token("bob"))
    alice_id = user_id(server, "alice")
    tab1 = clients("alice-tab1", server, server.seeder.token("alice"))
    online = bob.wait_for("user_online")
    assert online["userId"] == alice_id and online["userInfo"]["username"] == "alice"
    tab2 = clients("alice-tab2", server, server.seeder.token("alice"))
    # The second tab sees alice (itself) and bob in its online list; bob hears nothing new.
    listed = {entry["userId"]: entry["status"] for entry in tab2.wait_for("online_users")}
    assert listed == {alice_id: "online", user_id(server, "bob"): "online"}
    tab1.sio.disconnect()
    assert_none_receive("user_offline", bob)
    bob.assert_count_stays("user_online", 1, window=0)
    tab2.sio.disconnect()
    offline = bob.wait_for("user_offline")
    assert offline["userId"] == alice_id and offline["lastSeen"]
    bob.assert_count_stays("user_offline", 1)
    assert bob.sio.transport() == "websocket"


def test_status_changes_are_seen_by_others_and_bad_ones_refused(presence_server, clients):
    server = presence_server
    bob = clients("bob", server, server.seeder.token("bob"))
    alice = clients("alice", server, server.seeder.token("alice"))
    alice_id = user_id(server, "alice")
    ack = alice.sio.call("update_status", "busy", timeout=10)
    assert ack["success"] and ack["status"] == "busy"
    update = bob.wait_for("user_updated", lambda d: d["userId"] == alice_id)
    assert update["status"] == "busy" and update["lastSeen"]
    refused = alice.sio.call("update_status", "sleeping", timeout=10)
    assert refused["success"] is False and refused["error"]["code"] == "VALIDATION_ERROR"
    alice.sio.emit("update_status", {"status": 42})  # no ack asked: an error event instead
    assert alice.wait_for("error")["code"] == "VALIDATION_ERROR"
    bob.assert_count_stays("user_updated", 1, window=0)
    # Invisible: offline for the others while connected, and back.
    alice.sio.call("update_status", "offline", timeout=10)
    assert bob.wait_for("user_offline")["userId"] == alice_id
    listed = bob.sio.call("get_online_users", timeout=10)["users"]
    assert alice_id not in {entry["userId"] for entry in listed}
    alice.sio.call("update_status", "online", timeout=10)
    assert bob.wait_for("user_online")["userId"] == alice_id
    profile = requests.get(
        f"{server.url}/api/users/{alice_id}",
        headers={"Authorization": f"Bearer {server.seeder.token('bob')}"},
        timeout=5,
    ).json()
    assert profile["user"]["status"] == "online"


def test_chosen_status_survives_another_tab_and_a_quick_return(presence_server, clients):
    server = presence_server
    alice = clients("alice", server, server.seeder.token("alice"))
    alice.sio.call("update_status", "busy", timeout=10)
    second = clients("alice-2", server, server.seeder.token("alice"))
    second.sio.disconnect()
    alice.sio.disconnect()
    bob = clients("bob", server, server.seeder.token("bob"))
    assert user_id(server, "alice") not in {e["userId"] for e in bob.wait_for("online_users")}
    back = clients("alice-back", server, server.seeder.token("alice"))
    listed = {entry["userId"]: entry["status"] for entry in back.wait_for("online_users")}
    assert listed[user_id(server, "alice")] == "busy"


def test_away_after_inactivity_and_back_at_the_next_activity(presence_server, clients):
    server = presence_server  # NEXUS_AWAY_AFTER_S=2
    bob = clients("bob", server, server.seeder.token("bob"))
    alice = clients("alice", server, server.seeder.token("alice"))
    alice_id = user_id(server, "alice")
    # Bob keeps busy so that only alice goes away.
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and not any(
        d["userId"] == alice_id and d["status"] == "away" for d in bob.received("user_updated")
    ):
        bob.sio.call("ping", timeout=5)
        time.sleep(0.2)
    away = bob.wait_for("user_updated", lambda d: d["userId"] == alice_id, timeout=0.1)
    assert away["status"] == "away"
    assert [d for d in alice.received("user_updated") if d["userId"] == user_id(server, "bob")] == []
    alice.sio.call("ping", timeout=5)
    back = bob.wait_for("user_updated", lambda d: d["userId"] == alice_id and d["status"] == "online")
    assert back["status"] == "online"


# -- two instances sharing presence through Redis --------------------------------------


@pytest.mark.redis
def test_two_instances_share_presence_and_a_killed_one_leaves_no_ghosts(redis_channel, live_server, tmp_path):
    channel = redis_channel
    env = {"MESSAGE_QUEUE_URL": services.REDIS_URL, "SOCKETIO_REDIS_PREFIX": channel}
    url, seeder = live_server.database()
    for name in ("alice", "bob", "carol"):
        seeder.user(name)
    alice_id = str(seeder.user("alice")["id"])
    a = live_server.start(url, env={**env, "NEXUS_INSTANCE_ID": "presence-a"})
    b = live_server.start(url, env={**env, "NEXUS_INSTANCE_ID": "presence-b"})
    made: list[Client] = []

    def connect(name, server):
        made.append(Client(name).connect(server.url, seeder.token(name.split("@")[0])))
        return made[-1]

    try:
        bob = connect("bob@B", b)
        assert bob.welcome["instanceId"] == "presence-b"
        alice = connect("alice@A", a)
        assert alice.welcome["instanceId"] == "presence-a"
        assert bob.wait_for("user_online")["userId"] == alice_id
        # The online list read on B has the user connected to A, exactly once even with a tab on each.
        alice_b = connect("alice@B", b)
        listed = [e["userId"] for e in bob.sio.call("get_online_users", timeout=10)["users"]]
        assert listed.count(alice_id) == 1
        over_rest = requests.get(
            f"{b.url}/api/users/online", headers={"Authorization": f"Bearer {seeder.token('bob')}"}, timeout=5
        ).json()
        assert sorted(e["userId"] for e in over_rest["users"]) == sorted(listed) and over_rest["count"] == 2
        alice_b.sio.disconnect()
        assert_none_receive("user_offline", bob)

        # kill -9 A: no goodbye. Alice goes offline for everyone within 15 s.
        killed_at = time.monotonic()
        a.stop(signal.SIGKILL)
        offline = bob.wait_for("user_offline", timeout=15)
        elapsed = time.monotonic() - killed_at
        assert offline["userId"] == alice_id and elapsed < 15, elapsed
        assert alice_id not in [e["userId"] for e in bob.sio.call("get_online_users", timeout=10)["users"]]
        over_rest = requests.get(
            f"{b.url}/api/users/online", headers={"Authorization": f"Bearer {seeder.token('bob')}"}, timeout=5
        ).json()
        assert [e["userId"] for e in over_rest["users"]] == [str(seeder.user("bob")["id"])]

        # A restarts under the same instance id: no ghost of its earlier life anywhere.
        a2 = live_server.start(url, env={**env, "NEXUS_INSTANCE_ID": "presence-a"})
        carol = connect("carol@A", a2)
        listed = {e["userId"] for e in carol.wait_for("online_users")}
        assert alice_id not in listed and str(seeder.user("bob")["id"]) in listed
        listed_b = {e["userId"] for e in bob.sio.call("get_online_users", timeout=10)["users"]}
        assert listed_b == listed
        assert all(c.sio.transport() == "websocket" for c in (bob, carol))
    finally:
        for client in made:
            try:
                client.sio.disconnect()
            except Exception:  # noqa: BLE001 - the server may be gone
                pass
