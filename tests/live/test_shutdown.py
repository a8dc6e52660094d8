"""Graceful shutdown on SIGTERM: acknowledged work is kept, clients are told, and they reconnect by themselves."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time

import pytest
import socketio
from sqlalchemy import create_engine, text

from tests.support import services

pytestmark = pytest.mark.live
GRACE_S = 5


def stored_client_ids(database_url: str) -> set[str]:
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            return {row[0] for row in connection.execute(text("SELECT client_msg_id FROM messages"))}
    finally:
        engine.dispose()


def test_sigterm_keeps_acknowledged_messages_and_exits_within_the_grace(live_server):
    url, seeder = live_server.database()
    seeder.user("alice")
    server = live_server.start(url, env={"NEXUS_SHUTDOWN_GRACE_S": str(GRACE_S)})
    client = socketio.Client(reconnection=False)
    notices: list[dict] = []
    reasons: list[str] = []
    client.on("server_shutdown", notices.append)
    client.on("disconnect", lambda *args: reasons.append(args[0] if args else ""))
    client.connect(server.url, auth={"token": seeder.token("alice")}, transports=["websocket"], wait_timeout=10)
    assert client.call("join_room", "general", timeout=10)["success"]
    acked: list[str] = []
    stop = threading.Event()

    def chatter():
        for i in range(500):
            if stop.is_set():
                return
            try:
                ack = client.call("send_message", {"roomId": "general", "content": f"m{i}", "clientMsgId": f"c{i}"},
                                  timeout=5)
            except Exception:  # noqa: BLE001 - the connection is going away
                return
            if ack.get("success"):
                acked.append(ack["message"]["clientMsgId"])

    sender = threading.Thread(target=chatter, daemon=True)
    sender.start()
    deadline = time.monotonic() + 20
    while len(acked) < 10 and time.monotonic() < deadline:
        sender.join(0.05)
    assert len(acked) >= 10, "the chatter never got going"
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(GRACE_S + 5) == 0
    elapsed = time.monotonic() - started
    stop.set()
    sender.join(5)
    assert elapsed < GRACE_S + 2, elapsed
    assert notices and notices[0]["reconnectAfterMs"] > 0
    # The transport was dropped (that clients then reconnect: the two tests below); the client's
    # reader thread reports it on its own schedule, possibly just after the process is gone.
    deadline = time.monotonic() + 5
    while not reasons and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reasons
    assert set(acked) <= stored_client_ids(url)  # every acknowledged message was committed
    log = server.log()
    assert "shutting down" in log and "shutdown complete" in log


def test_the_official_client_reconnects_by_itself_after_a_shutdown(live_server):
    services.require("node")
    url, seeder = live_server.database()
    seeder.user("alice")
    first = live_server.start(url, env={"NEXUS_SHUTDOWN_GRACE_S": str(GRACE_S)})
    scenario = {"url": first.url, "token": seeder.token("alice"), "timeoutMs": 30000}
    node = subprocess.Popen(
        [shutil.which("node"), str(services.ROOT / "tests" / "js" / "reconnect.mjs"), json.dumps(scenario)],
        cwd=services.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert json.loads(node.stdout.readline()) == {"ready": True}
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(GRACE_S + 5) == 0
        # Another instance at the same address (a load balancer would pick a live one).
        live_server.start(url, port=first.port, env={"NEXUS_SHUTDOWN_GRACE_S": str(GRACE_S)})
        report = json.loads(node.stdout.readline())
    finally:
        node.kill()
    assert report["shutdownNotice"]["reconnectAfterMs"] > 0
    assert report["disconnectReason"] == "transport close"
    assert report["reconnected"] and report["secondId"] != report["firstId"]
    assert report["transport"] == "websocket"


@pytest.mark.redis
def test_twenty_clients_behind_nginx_move_to_the_other_instance(redis_channel, live_server, tmp_path):
    """SIGTERM to the instance serving 20 chatting clients: acknowledged messages are kept, every
    client is told, the process exits within the grace, and nginx (deploy/nginx.conf) brings every
    client back on the other instance by itself."""
    from tests.support.cluster import Client
    from tests.support.nginx import Nginx

    env = {"MESSAGE_QUEUE_URL": services.REDIS_URL, "SOCKETIO_REDIS_PREFIX": redis_channel,
           "NEXUS_SHUTDOWN_GRACE_S": str(GRACE_S), "NEXUS_TRUSTED_PROXIES": "1",
           "SOCKETIO_RATE_LIMIT_MAX_REQUESTS": "100000"}
    url, seeder = live_server.database()
    names = [f"user{i:02d}" for i in range(20)]
    for name in names:
        seeder.user(name)
    a = live_server.start(url, env={**env, "NEXUS_INSTANCE_ID": "a"})
    b = live_server.start(url, env={**env, "NEXUS_INSTANCE_ID": "b"})
    proxy = Nginx(tmp_path, [a.port, b.port])
    clients: list[Client] = []
    acked: list[str] = []
    acked_lock = threading.Lock()
    stop = threading.Event()
    try:
        for name in names:
            client = Client(name)
            client.sio = socketio.Client(reconnection=True, reconnection_delay=0.2, reconnection_delay_max=0.5)
            client.sio.on("*", client._on_event)
            client.connect(proxy.url, seeder.token(name))
            assert client.sio.call("join_room", "general", timeout=10)["success"]
            clients.append(client)
        serving = {c.welcome["instanceId"] for c in clients}
        assert len(serving) == 1, serving  # ip_hash: every client of one address on one instance
        victim, survivor = (a, "b") if serving == {"a"} else (b, "a")

        def chatter(client: Client, index: int) -> None:
            for i in range(1000):
                if stop.is_set():
                    return
                body = {"roomId": "general", "content": f"{index}-{i}", "clientMsgId": f"{index}-{i}"}
                try:
                    ack = client.sio.call("send_message", body, timeout=5)
                except Exception:  # noqa: BLE001 - disconnected meanwhile; try again after the reconnect
                    time.sleep(0.05)
                    continue
                if ack.get("success"):
                    with acked_lock:
                        acked.append(ack["message"]["clientMsgId"])

        senders = [threading.Thread(target=chatter, args=(c, n), daemon=True) for n, c in enumerate(clients)]
        for sender in senders:
            sender.start()
        deadline = time.monotonic() + 30
        while len(acked) < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acked) >= 100, "the clients never got going"
        started = time.monotonic()
        victim.process.send_signal(signal.SIGTERM)
        assert victim.process.wait(GRACE_S + 5) == 0
        assert time.monotonic() - started < GRACE_S + 2
        for client in clients:
            assert client.wait_for("server_shutdown")["reconnectAfterMs"] > 0
            # Reconnected by itself, through nginx, to the other instance.
            again = client.wait_for("connected", lambda w: w["instanceId"] == survivor, timeout=20)
            assert again["instanceId"] == survivor
        stop.set()
        for sender in senders:
            sender.join(10)
        assert set(acked) <= stored_client_ids(url)
        assert all(c.sio.transport() == "websocket" for c in clients)
    finally:
        stop.set()
        for client in clients:
            client.sio.reconnection = False
            try:
                client.sio.disconnect()
            except Exception:  # noqa: BLE001
                pass
        proxy.stop()


def test_idle_kept_alive_connections_are_closed_when_the_drain_begins(live_server):
    """`nexus serve` with kept-alive HTTP connections that wait for their next request, and one
    whose request never finishes arriving: the drain closes them as it begins (not when the
    server is stopped after the drain), without a word, and the process exits."""
    from tests.faults.test_shutdown_faults import RawConnection, watch_until_ended

    url, _ = live_server.database()
    server = live_server.start(url, env={"NEXUS_SHUTDOWN_GRACE_S": "10"})
    idle = [RawConnection(server.port) for _ in range(3)]
    for conn in idle:
        conn.request("/health")
    half = RawConnection(server.port)
    half.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nAcc")
    half.wait_read_by_server()  # being read by its handler, not waiting to be
    held = [*idle, half]
    stop_watching = threading.Event()
    watch_until_ended(held, stop_watching)
    try:
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(15) == 0
        deadline = time.monotonic() + 5
        while not all(conn.closed_at for conn in held) and time.monotonic() < deadline:
            time.sleep(0.02)
        closed_after = [conn.closed_at - started for conn in held if conn.closed_at]
        assert len(closed_after) == len(held)
        # The drain's own steps take 0.3 s; the server is stopped (what is left killed) after them.
        assert max(closed_after) < 0.3, closed_after
        for conn in held:
            assert conn.unread() == b""  # no 400 for the request cut short
        assert "'idleClosed': 4" in server.log()
    finally:
        stop_watching.set()
        for conn in held:
            conn.close()
