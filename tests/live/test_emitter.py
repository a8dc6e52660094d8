"""Processes that serve no clients emit into running Nexus servers: scripts with nexus.emitter, and
the `nexus notify` / `nexus broadcast` commands, through Redis or RabbitMQ.

Each test starts two real `nexus serve` instances on one database and one queue channel, connects
python-socketio WebSocket clients to both, and runs the emitting side as a separate plain Python
process, as a cron job or script would. Deliveries must reach exactly the sockets entitled to them.
The queue listener accepts only JSON: a pickled message on the channel is never unpickled.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import uuid
from typing import Any

import kombu
import pytest

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


def process_env(live_server, database_url: str, tmp_path, extra: dict[str, str]) -> dict[str, str]:
    """The environment of a process beside the live servers: their database, secret and queue."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEXUS_", "SOCKETIO_", "REDIS_"))}
    env.pop("MESSAGE_QUEUE_URL", None)
    env.update(
        {
            "DATABASE_URL": database_url,
            "JWT_SECRET": live_server.secret,
            "NEXUS_ENV": "development",
            "NEXUS_INSTANCE_PATH": str(tmp_path / "emitter-instance"),
            "NEXUS_INSTANCE_ID": "live-emitter",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=services.ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


def run_nexus(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nexus", *args], cwd=services.ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def last_json_line(output: str) -> Any:
    return json.loads(output.strip().splitlines()[-1])


def everyone(cluster: Cluster, clients) -> dict[str, Client]:
    """alice on both instances (two sockets), carol (sales) on A, bob (engineering) on B, root on A, a guest on B."""
    made = {
        "alice@A": clients("alice@A", cluster.a, cluster.token("alice")),
        "alice@B": clients("alice@B", cluster.b, cluster.token("alice")),
        "carol@A": clients("carol@A", cluster.a, cluster.token("carol")),
        "bob@B": clients("bob@B", cluster.b, cluster.token("bob")),
        "root@A": clients("root@A", cluster.a, cluster.token("root")),
        "guest@B": clients("guest@B", cluster.b),
    }
    for name, client in made.items():
        expected = cluster.a if name.endswith("@A") else cluster.b
        assert client.welcome["instanceId"] == expected.instance_id, (name, client.welcome)
        assert client.sio.transport() == "websocket"
    return made


def others(socks: dict[str, Client], *names: str) -> list[Client]:
    return [client for name, client in socks.items() if name not in names]


# -- a script ------------------------------------------------------------------------------------


@broker_params
def test_a_script_notifies_exactly_one_users_sockets(broker, mq, cluster, clients, live_server, tmp_path):
    socks = everyone(cluster, clients)
    mq.wait_until_listening(*socks.values())
    alice_id = cluster.seeder.user("alice")["id"]

    text = f"Your export is ready ({broker}) {uuid.uuid4().hex}"
    result = run_python(
        f"""
        import json
        from nexus.emitter import Emitter

        with Emitter.from_env(name="billing") as emitter:
            sent = emitter.notify("alice", "Export ready", {text!r}, type="success", data={{"exportId": 42}})
            assert emitter.flush(10)
        print(json.dumps(sent))
        """,
        process_env(live_server, cluster.database_url, tmp_path, mq.env),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sent = last_json_line(result.stdout)
    assert sent["message"] == text and sent["title"] == "Export ready" and sent["type"] == "success"
    assert sent["data"] == {"exportId": 42}
    assert sent["from"] == {"id": None, "name": "service:billing"}

    for name in ("alice@A", "alice@B"):  # every socket of alice's, on both instances
        assert socks[name].wait_for("notification", lambda data: data["id"] == sent["id"]) == sent
    assert_none_receive("notification", *others(socks, "alice@A", "alice@B"))
    assert socks["alice@A"].received("notification") == socks["alice@B"].received("notification") == [sent]

    # Persisted: it is alice's, and unread.
    from nexus.extensions import db
    from nexus.models import Notification

    with cluster.seeder.app.app_context():
        row = db.session.get(Notification, int(sent["id"]))
        assert (row.user_id, row.title, row.read_at) == (alice_id, "Export ready", None)
        db.session.remove()


@broker_params
def test_a_notification_sent_while_the_user_is_offline_arrives_when_they_connect(
    broker, mq, cluster, clients, live_server, tmp_path
):
    carol = clients("carol@A", cluster.a, cluster.token("carol"))
    mq.wait_until_listening(carol)
    text = f"While you were away ({broker}) {uuid.uuid4().hex}"
    result = run_python(
        f"""
        import json
        from nexus.emitter import notify
        print(json.dumps(notify("alice", "Missed you", {text!r})))
        """,
        process_env(live_server, cluster.database_url, tmp_path, mq.env),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sent = last_json_line(result.stdout)
    alice = clients("alice@B", cluster.b, cluster.token("alice"))
    assert alice.wait_for("notification", lambda data: data["id"] == sent["id"])["message"] == text
    assert_none_receive("notification", carol)


@broker_params
def test_the_module_functions_share_one_emitter_and_broadcast_to_the_right_rooms(
    broker, mq, cluster, clients, live_server, tmp_path
):
    socks = everyone(cluster, clients)
    mq.wait_until_listening(*socks.values())
    tag = uuid.uuid4().hex
    result = run_python(
        f"""
        import json
        import nexus.emitter as nexus_emitter

        sent = {{
            "department": nexus_emitter.broadcast_department_message("sales", "sales {tag}"),
            "admin": nexus_emitter.broadcast_admin_message("admins {tag}"),
            "system": nexus_emitter.broadcast_system_message("everyone {tag}"),
        }}
        nexus_emitter.emit("deploy_notice", {{"tag": {tag!r}}}, room="user_" + str({cluster.seeder.user("bob")["id"]}))
        assert nexus_emitter.shared_emitter() is nexus_emitter.shared_emitter()
        print(json.dumps(sent))
        """,  # no flush: the process-wide emitter flushes at exit
        process_env(live_server, cluster.database_url, tmp_path, mq.env),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # What the services return is what clients receive, the broadcast's record id included.
    sent = last_json_line(result.stdout)
    assert all(body["broadcastId"] for body in sent.values())

    for name in ("alice@A", "alice@B", "carol@A"):  # sales
        assert socks[name].wait_for("department_message") == sent["department"]
    assert socks["root@A"].wait_for("admin_message") == sent["admin"]
    for name in ("alice@A", "alice@B", "carol@A", "bob@B", "root@A"):  # every user, not the guest
        assert socks[name].wait_for("system_message") == sent["system"]
    assert socks["bob@B"].wait_for("deploy_notice") == {"tag": tag}
    assert sent["department"]["from"]["name"] == "service:emitter"
    assert_none_receive("department_message", socks["bob@B"], socks["root@A"], socks["guest@B"])
    assert_none_receive("admin_message", *others(socks, "root@A"), window=0.2)
    assert_none_receive("system_message", socks["guest@B"], window=0.2)
    assert_none_receive("deploy_notice", *others(socks, "bob@B"), window=0.2)


# -- the CLI -------------------------------------------------------------------------------------


@broker_params
def test_notify_and_broadcast_commands_reach_exactly_the_right_sockets(
    broker, mq, cluster, clients, live_server, tmp_path
):
    socks = everyone(cluster, clients)
    mq.wait_until_listening(*socks.values())
    env = process_env(live_server, cluster.database_url, tmp_path, mq.env)
    tag = uuid.uuid4().hex

    notified = run_nexus(["notify", "bob", "Heads up", f"disk almost full {tag}", "--type", "warning"], env)
    assert notified.returncode == 0, notified.stdout + notified.stderr
    got = socks["bob@B"].wait_for("notification", lambda data: tag in data["message"])
    assert (got["title"], got["type"], got["from"]["name"]) == ("Heads up", "warning", "service:cli")
    assert f"notification {got['id']} sent to bob" in notified.stdout

    department = run_nexus(["broadcast", "--department", "sales", f"sales meeting {tag}"], env)
    assert department.returncode == 0, department.stdout + department.stderr
    assert "sent to department sales" in department.stdout
    admins = run_nexus(["broadcast", "--admins", f"admins only {tag}"], env)
    assert admins.returncode == 0, admins.stdout + admins.stderr

    for name in ("alice@A", "alice@B", "carol@A"):
        got = socks[name].wait_for("department_message")
        assert got["message"] == f"sales meeting {tag}" and got["department"] == "sales"
    assert socks["root@A"].wait_for("admin_message")["message"] == f"admins only {tag}"
    assert_none_receive("notification", *others(socks, "bob@B"))
    assert_none_receive("department_message", socks["bob@B"], socks["root@A"], socks["guest@B"], window=0.2)
    assert_none_receive("admin_message", *others(socks, "root@A"), window=0.2)
    for client in socks.values():
        assert client.sio.transport() == "websocket"

    # Errors: one line with the code, a non-zero exit, nothing sent.
    unknown = run_nexus(["notify", "nobody-here", "Hi", "there"], env)
    assert unknown.returncode != 0
    assert "USER_NOT_FOUND" in unknown.stderr and "nobody-here" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    no_room = run_nexus(["broadcast", "--room", "no-such-room", "hello"], env)
    assert no_room.returncode != 0 and "ROOM_NOT_FOUND" in no_room.stderr
    both = run_nexus(["broadcast", "--admins", "--department", "sales", "hello"], env)
    assert both.returncode != 0 and "choose one of" in both.stderr
    assert_none_receive("system_message", *socks.values(), window=0.3)


# -- nothing is ever unpickled -------------------------------------------------------------------


class _Unpickled:
    """Unpickling this creates a directory: the proof that something was unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@broker_params
def test_a_pickled_message_on_the_channel_is_never_unpickled_and_the_listener_goes_on(
    broker, mq, live_server, clients, tmp_path
):
    url, seeder = live_server.database()
    seeder.user("alice")
    server = live_server.start(url, env=mq.env)
    alice = clients("alice", server, seeder.token("alice"))
    mq.wait_until_listening(alice)
    marker = tmp_path / f"unpickled-{uuid.uuid4().hex}"

    exchange = kombu.Exchange(mq.channel, type="fanout", durable=False)
    forged_emit = json.dumps(
        {"method": "emit", "event": "forged", "data": [{"n": 1}], "namespace": "/", "room": "all_users",
         "skip_sid": None, "callback": None, "host_id": "attacker"}
    )
    with kombu.Connection(mq.url, connect_timeout=5) as connection:
        producer = kombu.Producer(connection.default_channel, exchange=exchange)
        producer.publish(pickle.dumps(_Unpickled(str(marker))), content_type="application/x-python-serialize",
                         content_encoding="binary")
        producer.publish(forged_emit, serializer="pickle")  # a valid emit, but pickled: refused too
        producer.publish(json.dumps({**json.loads(forged_emit), "event": "genuine"}), serializer="json")

    assert alice.wait_for("genuine") == {"n": 1}  # the listener went on, and JSON still works
    assert not marker.exists(), "a pickled payload was unpickled by the server"
    assert alice.received("forged") == []
    log = server.log()
    assert log.count("is not JSON (content type application/x-python-serialize)") == 2, log
    assert "Traceback" not in log
    assert alice.sio.transport() == "websocket"
