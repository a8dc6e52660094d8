"""The /admin namespace over real servers: refusals, live stats, broadcasts, moderation across instances."""
from __future__ import annotations

import threading

import pytest
import requests
import socketio

from tests.support import services
from tests.support.cluster import Client, start_cluster

pytestmark = pytest.mark.live
WAIT = 10.0


class AdminClient:
    """A python-socketio client on /admin that records its events and its connect error."""

    def __init__(self) -> None:
        self.sio = socketio.Client(reconnection=False)
        self.events: list[tuple[str, object]] = []
        self.connect_error: object = None
        self._cond = threading.Condition()
        self.sio.on("*", self._record, namespace="/admin")
        self.sio.on("connect_error", self._refused, namespace="/admin")

    def _record(self, event, *args):
        with self._cond:
            self.events.append((event, args[0] if len(args) == 1 else list(args)))
            self._cond.notify_all()

    def _refused(self, data):
        self.connect_error = data

    def connect(self, url: str, token: str | None) -> "AdminClient":
        auth = {"token": token} if token else None
        self.sio.connect(url, auth=auth, namespaces=["/admin"], transports=["websocket"], wait_timeout=10)
        assert self.sio.transport() == "websocket"
        return self

    def call(self, event: str, data=None):
        return self.sio.call(event, data, namespace="/admin", timeout=WAIT)

    def wait_count(self, event: str, count: int, timeout: float = WAIT) -> list:
        with self._cond:
            ok = self._cond.wait_for(lambda: len([1 for n, _ in self.events if n == event]) >= count, timeout)
            got = [data for name, data in self.events if name == event]
        assert ok, f"{count} x {event!r} expected, got {got}"
        return got


@pytest.fixture
def admin_server(live_server):
    url, seeder = live_server.database()
    seeder.user("root", role="admin")
    seeder.user("alice", department="sales")
    seeder.user("bob", department="engineering")
    server = live_server.start(url)
    server.seeder = seeder
    return server


@pytest.fixture
def admins():
    made: list[AdminClient] = []

    def make() -> AdminClient:
        made.append(AdminClient())
        return made[-1]

    yield make
    for client in made:
        if client.sio.connected:
            threading.Thread(target=client.sio.disconnect, daemon=True).start()


@pytest.mark.parametrize("who", ["alice", None])
def test_non_admins_are_refused_with_forbidden(admin_server, admins, who):
    token = admin_server.seeder.token(who) if who else None
    client = admins()
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(admin_server.url, token)
    expected = "FORBIDDEN" if who else "UNAUTHORIZED"
    assert client.connect_error["data"]["code"] == expected
    rest = requests.post(
        admin_server.url + "/api/admin/broadcast",
        json={"kind": "system", "message": "hi"},
        headers={"Authorization": f"Bearer {admin_server.seeder.token('alice')}"},
        timeout=5,
    )
    assert rest.status_code == 403 and rest.json()["error"]["code"] == "FORBIDDEN"


def test_admins_get_stats_at_once_and_every_few_seconds(admin_server, admins, clients):
    alice = clients("alice", admin_server, admin_server.seeder.token("alice"))
    alice.sio.call("join_room", "general", timeout=WAIT)
    alice.sio.call("send_message", {"roomId": "general", "content": "one"}, timeout=WAIT)
    admin = admins().connect(admin_server.url, admin_server.seeder.token("root"))
    first, second = admin.wait_count("stats", 2, timeout=8)[:2]
    assert second["at"] > first["at"]
    [mine] = first["instances"]
    assert mine["instanceId"] == "live-0"
    assert mine["connections"] >= 2 and mine["byNamespace"]["/"] >= 1 and mine["byNamespace"]["/admin"] == 1
    assert mine["byTransport"].get("websocket", 0) == mine["connections"]
    assert mine["messagesTotal"] == 1 and mine["usersOnline"] == 2 and mine["rooms"] == 1
    asked = admin.call("get_stats")
    assert asked["success"] and asked["stats"]["totals"]["connections"] == mine["connections"]


def test_admin_broadcasts_reach_exactly_their_audience(admin_server, admins, clients):
    seeder = admin_server.seeder
    alice = clients("alice", admin_server, seeder.token("alice"))
    bob = clients("bob", admin_server, seeder.token("bob"))
    root = clients("root", admin_server, seeder.token("root"))
    admin = admins().connect(admin_server.url, seeder.token("root"))
    ack = admin.call("broadcast", {"kind": "department", "department": "sales", "message": "sales only"})
    assert ack["success"], ack
    assert alice.wait_for("department_message")["message"] == "sales only"
    ack = admin.call("broadcast", {"kind": "admin", "message": "admins only"})
    assert root.wait_for("admin_message")["message"] == "admins only"
    bad = admin.call("broadcast", {"kind": "department", "message": "no department"})
    assert bad["success"] is False and bad["error"]["code"] == "VALIDATION_ERROR"
    bob.assert_count_stays("department_message", 0)
    bob.assert_count_stays("admin_message", 0, window=0)
    alice.assert_count_stays("admin_message", 0, window=0)


def test_ban_closes_the_users_sockets_and_their_token_stops_working(admin_server, admins, clients):
    seeder = admin_server.seeder
    alice_token = seeder.token("alice")
    tab1 = clients("alice-1", admin_server, alice_token)
    tab2 = clients("alice-2", admin_server, alice_token)
    admin = admins().connect(admin_server.url, seeder.token("root"))
    alice_id = seeder.user("alice")["id"]
    ack = admin.call("ban_user", {"userId": alice_id})
    assert ack["success"] and ack["user"]["role"] == "banned"
    for tab in (tab1, tab2):
        assert tab.wait_for("session_revoked")["reason"] == "banned"
    again = Client("alice-again")
    with pytest.raises(socketio.exceptions.ConnectionError):
        again.connect(admin_server.url, alice_token)
    me = requests.get(admin_server.url + "/api/auth/me", headers={"Authorization": f"Bearer {alice_token}"}, timeout=5)
    assert me.status_code == 403 and me.json()["error"]["code"] == "USER_BANNED"
    own = admin.call("set_role", {"userId": seeder.user("root")["id"], "role": "user"})
    assert own["success"] is False and own["error"]["code"] == "CONFLICT"
    assert admin.call("set_role", {"userId": alice_id, "role": "emperor"})["error"]["code"] == "VALIDATION_ERROR"


@pytest.mark.redis
def test_disconnect_user_and_ban_reach_every_instance(redis_channel, live_server, admins):
    channel = redis_channel
    cluster = start_cluster(live_server, {"MESSAGE_QUEUE_URL": services.REDIS_URL, "SOCKETIO_REDIS_PREFIX": channel})
    made: list[Client] = []
    try:
        for name, server in (("alice@A", cluster.a), ("alice@B", cluster.b), ("bob@B", cluster.b)):
            made.append(Client(name).connect(server.url, cluster.token(name.split("@")[0])))
        alice_a, alice_b, bob_b = made
        admin = admins().connect(cluster.a.url, cluster.token("root"))
        alice_id = cluster.seeder.user("alice")["id"]
        ack = admin.call("disconnect_user", {"userId": alice_id})
        assert ack["success"] and ack["disconnectedHere"] == 1
        for tab in (alice_a, alice_b):
            assert tab.wait_for("session_revoked")["reason"] == "disconnected by an administrator"
        bob_b.assert_count_stays("session_revoked", 0)
        assert bob_b.sio.connected
        stats = admin.call("get_stats")["stats"]
        assert sorted(s["instanceId"] for s in stats["instances"]) == sorted([cluster.a.instance_id, cluster.b.instance_id])
    finally:
        for client in made:
            try:
                client.sio.disconnect()
            except Exception:  # noqa: BLE001 - already closed by the server
                pass
