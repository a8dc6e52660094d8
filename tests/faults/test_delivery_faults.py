"""Delivery under faults: an acknowledged message reaches every member that stayed connected or came
back with `since`, once each and in seq order, whatever dies and whenever.

Three Procfile instances behind the deploy sample's nginx, on a PostgreSQL database of their own.

- A crash between commit and publish, forced with the `after_commit` fault point (the worker
  SIGKILLs itself right after the message's commit, before anything is published; gunicorn's
  master starts a new worker). Once with the sender retrying the same clientMsgId on another
  instance (the retry re-publishes), once with no retry at all (another instance's outbox sweep
  publishes it).
- A Redis outage (a private redis-server that is both the shared store and the message queue):
  senders on every instance keep sending while it is down; each instance delivers its own
  senders' messages at once and the others' only later, yet every socket sees each room in
  seq order.
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from sqlalchemy import create_engine, text

from tests.support import services
from tests.support.nginx import Nginx
from tests.support.scale import Tab, close_all, grid, wait_until

pytestmark = pytest.mark.live

ROOM = "fault-room"
DELIVERY_S = 15.0  # what may pass before a message committed by a dead instance is delivered


def db_rows(database_url: str, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(sql), params))
    finally:
        engine.dispose()


def in_order_once(tab: Tab, room: str) -> list[int]:
    """The seqs `tab` received for `room`; fails if any repeats or goes backwards."""
    seqs = tab.seqs(room)
    assert seqs == sorted(set(seqs)), f"{tab.name} saw {room} out of order or twice: {seqs}"
    return seqs


def worker_pid(server: Any) -> int | None:
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    return int(children[0]) if len(children) == 1 else None


@pytest.mark.timeout(240)
def test_a_crash_between_commit_and_publish_loses_nothing_with_or_without_a_retry(tmp_path):
    users = {name: {} for name in ("sender", "loner", "mem0", "mem1", "mem2", "mem3", "mem4", "mem5")}
    env = {"NEXUS_FAULT_POINTS": "after_commit:crash-", "NEXUS_OUTBOX_STALE_MS": "3000", "NEXUS_TRUSTED_PROXIES": "1"}
    made: list[Tab] = []
    with grid(tmp_path, queue_url=services.REDIS_URL, ids=["dlv-a", "dlv-b", "dlv-c"], users=users, env=env) as g:
        proxy = Nginx(tmp_path, [server.port for server in g.servers])
        try:
            sender = Tab("sender", g.token("sender"), delay=0.3).open(proxy.url)
            made.append(sender)
            victim = g.by_id(sender.welcome["instanceId"])
            others = [server for server in g.servers if server is not victim]
            # Two members behind nginx (the sender's instance), two directly on each of the others.
            placed = {"mem0": proxy.url, "mem1": proxy.url, "mem2": others[0].url, "mem3": others[0].url,
                      "mem4": others[1].url, "mem5": others[1].url}
            members = {name: Tab(name, g.token(name), delay=0.3).open(url) for name, url in placed.items()}
            made.extend(members.values())
            for tab in [sender, *members.values()]:
                tab.join(ROOM)

            acked: dict[str, dict[str, Any]] = {}
            for n in range(5):
                ack = sender.sio.call("send_message", {"roomId": ROOM, "content": f"n{n}", "clientMsgId": f"n-{n}"},
                                      timeout=10)
                assert ack["success"], ack
                acked[f"n-{n}"] = ack["message"]
            for tab in members.values():
                wait_until(lambda: len(tab.seqs(ROOM)) == 5, 10, lambda: f"{tab.name}: {tab.seqs(ROOM)}")

            # 1. The instance dies right after the commit; the sender retries the same clientMsgId.
            old_worker = worker_pid(victim)
            with pytest.raises(Exception):  # noqa: B017 - the socket is gone before any ack
                sender.sio.call("send_message", {"roomId": ROOM, "content": "first crash", "clientMsgId": "crash-1"},
                                timeout=5)
            stayed = [members[name] for name in ("mem2", "mem3", "mem4", "mem5")]
            assert "fault point after_commit reached" in victim.log()
            [committed] = db_rows(g.database_url, "SELECT seq FROM messages WHERE client_msg_id = 'crash-1'")
            wait_until(lambda: sender.sio.connected and sender.sio.transport() == "websocket", 15,
                       "the sender did not come back")
            retried = sender.sio.call("send_message", {"roomId": ROOM, "content": "first crash",
                                                       "clientMsgId": "crash-1"}, timeout=10)
            assert retried["success"] and retried["duplicate"] is True, retried
            assert retried["message"]["seq"] == committed.seq
            for tab in stayed:
                wait_until(lambda: committed.seq in tab.seqs(ROOM), DELIVERY_S,
                           lambda: f"{tab.name} never got the crashed message: {tab.seqs(ROOM)}")
            logs = "".join(server.log() for server in g.servers)
            assert "a retried send re-published message" in logs or "left unpublished" in logs
            wait_until(lambda: worker_pid(victim) not in (None, old_worker), 30, "gunicorn did not start a new worker")

            # 2. Another instance dies right after a commit and nobody retries: the outbox sweep publishes it.
            target = others[0]
            loner = Tab("loner", g.token("loner"), reconnect=False).open(target.url)
            made.append(loner)
            loner.join(ROOM)
            with pytest.raises(Exception):  # noqa: B017
                loner.sio.call("send_message", {"roomId": ROOM, "content": "second crash", "clientMsgId": "crash-2"},
                               timeout=5)
            [orphan] = db_rows(g.database_url, "SELECT seq FROM messages WHERE client_msg_id = 'crash-2'")
            for tab in [members["mem4"], members["mem5"], sender]:  # on the third instance, or moved there
                wait_until(lambda: orphan.seq in tab.seqs(ROOM), DELIVERY_S,
                           lambda: f"{tab.name} never got the orphaned message: {tab.seqs(ROOM)}")
            assert "left unpublished" in "".join(server.log() for server in g.servers)

            # 3. Everyone, including those whose instance died under them, has everything, in order, once.
            final = sender.sio.call("send_message", {"roomId": ROOM, "content": "after", "clientMsgId": "after"},
                                    timeout=10)
            assert final["success"], final
            everything = list(range(1, final["message"]["seq"] + 1))
            stored = [row.seq for row in db_rows(g.database_url, "SELECT m.seq FROM messages m JOIN rooms r ON "
                                                 "r.id = m.room_id WHERE r.name = :room ORDER BY m.seq", room=ROOM)]
            assert stored == everything
            for tab in members.values():
                wait_until(lambda: tab.seqs(ROOM)[-1:] == [everything[-1]], DELIVERY_S,
                           lambda: f"{tab.name}: {tab.seqs(ROOM)}")
                assert in_order_once(tab, ROOM) == everything, tab.name
                assert tab.sio.transport() == "websocket"
            # Every outbox entry ends up marked published (marks are written in batches).
            wait_until(lambda: not db_rows(g.database_url, "SELECT id FROM outbox WHERE published_at IS NULL"), 10,
                       lambda: f"unpublished: {db_rows(g.database_url, 'SELECT id FROM outbox WHERE published_at IS NULL')}")
        finally:
            close_all(made)  # type: ignore[arg-type]
            proxy.stop()


# -- a Redis outage -----------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of this test's own on a free port, stopped and started at will."""

    def __init__(self, workdir: Path):
        self.port = services.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=open(self.workdir / "redis.log", "ab"), stderr=subprocess.STDOUT,
        )
        wait_until(self.answers, 10, "the private Redis did not start")

    def answers(self) -> bool:
        result = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True)
        return result.stdout.strip() == "PONG"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[PrivateRedis]:
    redis = PrivateRedis(workdir)
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


@pytest.mark.timeout(240)
def test_during_a_redis_outage_every_socket_still_sees_each_room_in_seq_order(tmp_path):
    names = [f"rider{i}" for i in range(6)]
    with private_redis(tmp_path / "redis") as redis:
        env = {"REDIS_URL": redis.url, "NEXUS_OUTBOX_STALE_MS": "3000"}
        with grid(tmp_path, queue_url=redis.url, ids=["ord-a", "ord-b", "ord-c"],
                  users={name: {} for name in names}, env=env) as g:
            made: list[Tab] = []
            stop = threading.Event()
            acked: list[int] = []
            refused: list[Any] = []
            lock = threading.Lock()
            threads: list[threading.Thread] = []
            try:
                for i, name in enumerate(names):  # two on each instance
                    tab = Tab(name, g.token(name), reconnect=False).open(g.servers[i % 3].url)
                    tab.join(ROOM)
                    made.append(tab)

                def chatter(tab: Tab) -> None:
                    n = 0
                    while not stop.is_set():
                        body = {"roomId": ROOM, "content": f"{tab.name}-{n}", "clientMsgId": f"{tab.name}-{n}"}
                        try:
                            ack = tab.sio.call("send_message", body, timeout=10)
                        except Exception as exc:  # noqa: BLE001
                            refused.append(repr(exc))
                            return
                        if ack["success"]:
                            with lock:
                                acked.append(ack["message"]["seq"])
                            n += 1
                        elif ack["error"]["code"] in ("UNAVAILABLE", "RATE_LIMITED"):
                            time.sleep(ack["error"].get("retryAfterMs", 200) / 1000)
                        else:
                            refused.append(ack)
                            return
                        stop.wait(0.15)

                threads = [threading.Thread(target=chatter, args=(tab,), daemon=True) for tab in made[::2]]
                for thread in threads:
                    thread.start()
                wait_until(lambda: len(acked) >= 15, 20, "the chatter never got going")
                redis.stop()
                outage_started = len(acked)
                wait_until(lambda: len(acked) >= outage_started + 20, 30,
                           lambda: f"sends stopped during the Redis outage: {refused}")
                redis.start()
                for server in g.servers:  # readiness reports the queue again
                    wait_until(lambda: requests.get(server.url + "/health/ready", timeout=5).status_code == 200, 45,
                               f"{server.instance_id} did not recover from the Redis outage")
                wait_until(lambda: len(acked) >= outage_started + 35, 30, "sends did not go on after the outage")
                stop.set()
                for thread in threads:
                    thread.join(15)
                assert not refused, refused
                everything = sorted(acked)
                assert everything == list(range(1, len(everything) + 1))
                for tab in made:
                    wait_until(lambda: set(everything) <= set(tab.seqs(ROOM)), DELIVERY_S,
                               lambda: f"{tab.name} misses {sorted(set(everything) - set(tab.seqs(ROOM)))[:20]}")
                    seqs = in_order_once(tab, ROOM)
                    assert seqs[: len(everything)] == everything, tab.name
                    assert not tab.received("messages_missed"), tab.received("messages_missed")
                    assert tab.sio.transport() == "websocket"
                gaps_closed = sum(server.log().count("gap") for server in g.servers)
                print(f"\nRedis outage: {len(everything)} messages, {len(everything) - outage_started} sent during "
                      f"or after it; gap log lines: {gaps_closed}")
            finally:
                stop.set()
                for thread in threads:
                    thread.join(5)
                close_all(made)  # type: ignore[arg-type]
