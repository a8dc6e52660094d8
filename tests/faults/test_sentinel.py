"""Redis behind Sentinel: a private primary, one replica and three Sentinels on loopback ports (all
with passwords), two Nexus instances (the Procfile's `web`, PostgreSQL) and a Celery worker that
find Redis and the message queue through the Sentinels, and the primary SIGKILLed under traffic.
The queue, presence and the shared rate limits (events and HTTP) must resume on the promoted
replica within 15 s, the worker must run tasks again, and no acknowledged message may be lost.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from tests.support import services
from tests.support.live import LiveServer, LiveServerFactory, Seeder
from tests.support.scale import (
    READY_TIMEOUT_S, Tab, close_all, postgres_database, stored, wait_until, wait_until_ready,
)

pytestmark = [pytest.mark.live, pytest.mark.postgres]

MASTER = "mymaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
PRIMARY_PASSWORD = "primary-" + secrets.token_hex(8)
SENTINEL_PASSWORD = "sentinel-" + secrets.token_hex(8)
RESUME_WITHIN_S = 15.0
WAIT = 10.0
TASK_TIMEOUT_S = 30


# -- the Sentinel set ---------------------------------------------------------------------------


class RedisProcess:
    """One redis-server (a data node or a Sentinel) in the foreground, logging to a file."""

    def __init__(self, name: str, args: list[str], workdir: Path, port: int, password: str):
        self.name = name
        self.port = port
        self.password = password
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            ["redis-server", *args], cwd=workdir, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def client(self, timeout: float = 1.0) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=timeout,
                           socket_connect_timeout=timeout, decode_responses=True)

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class SentinelRedis:
    """A primary, a replica (`--replicaof`) and three Sentinels (quorum 2), all with passwords."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.started: list[RedisProcess] = []
        try:
            self.primary = self._data_node("primary", [])
            self.replica = self._data_node("replica", ["--replicaof", "127.0.0.1", str(self.primary.port)])
            self.sentinels = [self._sentinel(index) for index in range(3)]
        except BaseException:
            self.stop()
            raise

    def _data_node(self, name: str, extra: list[str]) -> RedisProcess:
        port = services.free_port()
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--dir", str(self.workdir), "--dbfilename", f"{name}.rdb",
                "--requirepass", PRIMARY_PASSWORD, "--masterauth", PRIMARY_PASSWORD, *extra]
        return self._start(RedisProcess(name, args, self.workdir, port, PRIMARY_PASSWORD))

    def _sentinel(self, index: int) -> RedisProcess:
        port = services.free_port()
        folder = self.workdir / f"sentinel-{index}"
        folder.mkdir()
        conf = folder / "sentinel.conf"  # Sentinel rewrites its configuration: a writable file each
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {folder}\n"
            f"requirepass {SENTINEL_PASSWORD}\n"
            f"sentinel sentinel-pass {SENTINEL_PASSWORD}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} 2\n"
            f"sentinel auth-pass {MASTER} {PRIMARY_PASSWORD}\n"
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        return self._start(RedisProcess(f"sentinel-{index}", [str(conf), "--sentinel"], folder, port,
                                        SENTINEL_PASSWORD))

    def _start(self, process: RedisProcess) -> RedisProcess:
        self.started.append(process)
        return process

    @property
    def addresses(self) -> str:
        """REDIS_SENTINELS: host:port,host:port,host:port."""
        return ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)

    def _named_primary(self, sentinel: RedisProcess) -> int | None:
        with contextlib.suppress(Exception):
            client = sentinel.client()
            try:
                return int(client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER)[1])
            finally:
                client.close()
        return None

    def wait_ready(self, timeout: float = 30.0) -> None:
        """The replica is in sync and every Sentinel knows the primary, the replica and its two peers."""
        deadline = time.monotonic() + timeout
        problem: str | None = "not checked"
        while time.monotonic() < deadline:
            for process in self.started:
                if process.process.poll() is not None:
                    raise RuntimeError(f"{process.name} exited:\n{process.log()}")
            problem = self._not_ready()
            if problem is None:
                return
            time.sleep(0.2)
        raise RuntimeError(f"the Sentinel set was not ready within {timeout}s: {problem}")

    def _not_ready(self) -> str | None:
        try:
            replica = self.replica.client()
            try:
                if replica.info("replication").get("master_link_status") != "up":
                    return "the replica is not in sync"
            finally:
                replica.close()
            for sentinel in self.sentinels:
                client = sentinel.client()
                try:
                    state = client.execute_command("SENTINEL", "MASTER", MASTER)
                finally:
                    client.close()
                if isinstance(state, list):
                    state = dict(zip(state[0::2], state[1::2]))
                if int(state["port"]) != self.primary.port:
                    return f"{sentinel.name} names port {state['port']} as the primary"
                if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                    return (f"{sentinel.name} knows {state['num-slaves']} replica(s), "
                            f"{state['num-other-sentinels']} peer(s)")
        except Exception as exc:  # noqa: BLE001 - still starting
            return f"{type(exc).__name__}: {exc}"
        return None

    def wait_promoted(self, timeout: float) -> float:
        """Every Sentinel names the replica, and the replica is a primary; when that was (monotonic)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if {self._named_primary(s) for s in self.sentinels} == {self.replica.port}:
                with contextlib.suppress(Exception):
                    client = self.replica.client()
                    try:
                        if client.info("replication").get("role") == "master":
                            return time.monotonic()
                    finally:
                        client.close()
            time.sleep(0.05)
        raise AssertionError(f"the replica was not promoted within {timeout}s; the Sentinels name "
                             f"{[self._named_primary(s) for s in self.sentinels]}:\n{self.sentinels[0].log()[-3000:]}")

    def stop(self) -> None:
        for process in self.started:
            with contextlib.suppress(Exception):
                process.kill()


@contextlib.contextmanager
def sentinel_redis(workdir: Path) -> Iterator[SentinelRedis]:
    """A ready Sentinel set; every one of its processes is killed afterwards, whatever happened."""
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if services.services_required():
            pytest.fail(message + " (CI requires every service)")
        pytest.skip(message)
    workdir.mkdir(parents=True)
    redis_set = SentinelRedis(workdir)
    try:
        redis_set.wait_ready()
        yield redis_set
    finally:
        redis_set.stop()


# -- helpers ----------------------------------------------------------------------------------


def from_user(user_id: str):
    return lambda data: data.get("userId") == user_id


#: Every REST answer the test got that was not a 200: (status, Retry-After header).
REFUSALS: list[tuple[int, str | None]] = []


def get_online(server: LiveServer, token: str) -> requests.Response | None:
    """GET /api/users/online on one instance; refusals are recorded in REFUSALS."""
    try:
        answer = requests.get(server.url + "/api/users/online", headers={"Authorization": f"Bearer {token}"},
                              timeout=3)
    except requests.RequestException:
        return None
    if answer.status_code != 200:
        REFUSALS.append((answer.status_code, answer.headers.get("Retry-After")))
        return None
    return answer


def online_ids(server: LiveServer, token: str) -> set[str] | None:
    """The user ids of GET /api/users/online on one instance (None when it does not answer 200)."""
    answer = get_online(server, token)
    return None if answer is None else {str(entry["userId"]) for entry in answer.json()["users"]}


def http_remaining(server: LiveServer, token: str) -> int | None:
    """X-RateLimit-Remaining of one REST request to the instance (None without an answer)."""
    answer = get_online(server, token)
    try:
        return None if answer is None else int(answer.headers["X-RateLimit-Remaining"])
    except (KeyError, ValueError):
        return None


def shared_state_ok(server: LiveServer) -> bool:
    """The instance's readiness check finds its shared-state store answering."""
    try:
        answer = requests.get(server.url + "/health/ready", timeout=3)
        return answer.json()["checks"]["sharedState"]["status"] == "ok"
    except (requests.RequestException, ValueError, KeyError):
        return False


def spend(tab: Tab, count: int) -> int:
    """Send up to `count` pings; how many were allowed before the first RATE_LIMITED (all if none)."""
    for sent in range(count):
        ack = tab.sio.call("ping", timeout=WAIT)
        if not ack["success"]:
            assert ack["error"]["code"] == "RATE_LIMITED", ack
            return sent
    return count


# -- the failover ----------------------------------------------------------------------------

ROOM = "failover"
SENDERS = {"a": ["sa1", "sa2", "sa3"], "b": ["sb1", "sb2", "sb3"]}
WATCHERS = {"a": "watch-a", "b": "watch-b"}
LIMITED = "lim"
LATE = {"a": "late-a", "b": "late-b"}
#: Event cost units per user per hour: the senders (about 20 s of traffic) stay below, LIMITED spends it all.
EVENT_LIMIT = 400
LEFT_BEFORE = EVENT_LIMIT - 300
SEND_EVERY_S = 0.25


@pytest.mark.timeout(150)
def test_a_sentinel_failover_under_traffic_loses_nothing(tmp_path):
    users = [*SENDERS["a"], *SENDERS["b"], *WATCHERS.values(), LIMITED, *LATE.values()]
    REFUSALS.clear()
    made: list[Tab] = []
    stop = threading.Event()
    threads: list[threading.Thread] = []
    with contextlib.ExitStack() as stack:
        redis_set = stack.enter_context(sentinel_redis(tmp_path / "redis"))
        database_url = stack.enter_context(postgres_database())
        factory = LiveServerFactory(tmp_path, secret=secrets.token_urlsafe(40))
        stack.callback(factory.stop_all)
        seeder = Seeder(database_url, factory.secret, tmp_path / "seeder")
        factory.seeders.append(seeder)
        ids = {name: str(seeder.user(name)["id"]) for name in users}
        tokens = {name: seeder.token(name) for name in users}
        reader = tokens[WATCHERS["a"]]
        # Shared state through REDIS_SENTINELS; the queue in kombu's own sentinel:// form.
        kombu_url = ";".join(f"sentinel://:{PRIMARY_PASSWORD}@127.0.0.1:{s.port}/0" for s in redis_set.sentinels)
        env = {
            "REDIS_SENTINELS": redis_set.addresses,
            "REDIS_SENTINEL_MASTER": MASTER,
            "REDIS_PASSWORD": PRIMARY_PASSWORD,
            "REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
            "MESSAGE_QUEUE_URL": kombu_url,
            "SOCKETIO_REDIS_PREFIX": f"sentinel-{uuid.uuid4().hex[:8]}",
            "SOCKETIO_RATE_LIMIT_MAX_REQUESTS": str(EVENT_LIMIT),
            "SOCKETIO_RATE_LIMIT_WINDOW_MS": str(3600 * 1000),
            "NEXUS_HTTP_RATE_LIMIT": "100000 per hour",  # the test polls; it must never be refused
        }
        servers = {}
        for where in "ab":
            servers[where] = factory.start(database_url, kind="procfile", wait=False,
                                           env={**env, "NEXUS_INSTANCE_ID": f"sentinel-{where}"})
        # A Celery worker whose broker, result backend and emitter go through the Sentinels too.
        from tests.live.test_emitter import process_env
        from tests.live.test_worker import Worker

        worker_env = process_env(factory, database_url, tmp_path, {**env, "NEXUS_INSTANCE_ID": "sentinel-worker"})
        worker = Worker(worker_env, tmp_path / "worker.log")
        stack.callback(worker.stop)
        for server in servers.values():
            server.wait_ready(READY_TIMEOUT_S)
            wait_until_ready(server)
        worker.wait_ready()
        stack.callback(close_all, made)  # before the servers stop (callbacks run last-in first-out)

        def tab(name: str, where: str, *, reconnect: bool = True) -> Tab:
            client = Tab(f"{name}@{where}", tokens[name], reconnect=reconnect)
            made.append(client)
            client.open(servers[where].url)
            assert client.welcome["instanceId"] == f"sentinel-{where}"
            return client

        watchers = {where: tab(WATCHERS[where], where, reconnect=False) for where in "ab"}
        senders = [tab(name, where) for where in "ab" for name in SENDERS[where]]
        for client in [*senders, *watchers.values()]:
            client.join(ROOM)
        limited = {where: tab(LIMITED, where, reconnect=False) for where in "ab"}
        everyone = {ids[name] for name in [*SENDERS["a"], *SENDERS["b"], *WATCHERS.values(), LIMITED]}
        for where, other in (("a", "b"), ("b", "a")):  # presence is shared before the fault
            for name in SENDERS[other]:
                watchers[where].wait_for("user_online", from_user(ids[name]))
        wait_until(lambda: all(online_ids(s, reader) == everyone for s in servers.values()), WAIT,
                   lambda: f"online lists before the fault: {[online_ids(s, reader) for s in servers.values()]}")

        # The event limit is one counter for a user on both instances: spend most of it on A and B.
        from nexus.config import Config
        from nexus.services.ratelimit import EventLimiter, rate_key

        counter = EventLimiter(Config.from_env({**env, "NEXUS_INSTANCE_PATH": str(tmp_path / "limits-reader")}))

        def shared_remaining() -> int | None:
            """What the shared counter (on whichever primary the Sentinels name) leaves LIMITED."""
            try:
                return counter.shared.get_window_stats(counter.item, rate_key(ids[LIMITED], None)).remaining
            except Exception:  # noqa: BLE001 - Redis unreachable right now
                return None

        assert spend(limited["a"], 150) == 150 and spend(limited["b"], 150) == 150
        assert shared_remaining() == LEFT_BEFORE

        acked: dict[str, int] = {}  # messageId -> seq
        acked_at: dict[str, float] = {}
        started_at: dict[str, float] = {}  # messageId -> when its (last) send began
        sent_by: dict[str, str] = {}  # messageId -> "a" or "b"
        failures: list[Any] = []
        lock = threading.Lock()

        def chat(sender: Tab, where: str) -> None:
            n = 0
            while not stop.is_set():
                began = time.monotonic()
                client_msg_id = f"{sender.name.replace('@', '.')}-{n}"
                body = {"roomId": ROOM, "content": f"{sender.name} {n}", "clientMsgId": client_msg_id}
                try:
                    ack = sender.sio.call("send_message", body, timeout=5)
                except Exception as exc:  # noqa: BLE001 - no answer: the same clientMsgId again
                    with lock:
                        failures.append(("no ack", sender.name, type(exc).__name__))
                    stop.wait(0.1)
                    continue
                if not ack["success"]:
                    with lock:
                        failures.append(ack["error"])
                    if ack["error"]["code"] == "UNAVAILABLE":  # retried, as a client should
                        stop.wait(max(0.1, ack["error"].get("retryAfterMs", 100) / 1000))
                        continue
                    return
                with lock:
                    acked[ack["messageId"]] = ack["message"]["seq"]
                    acked_at[ack["messageId"]] = time.monotonic()
                    started_at[ack["messageId"]] = began
                    sent_by[ack["messageId"]] = where
                n += 1
                stop.wait(SEND_EVERY_S)

        def type_on(watcher: Tab) -> None:
            typing = False
            while not stop.is_set():
                typing = not typing
                with contextlib.suppress(Exception):  # no answer during the fault: next round
                    watcher.sio.call("typing_start" if typing else "typing_stop", ROOM, timeout=5)
                stop.wait(0.3)

        threads = [threading.Thread(target=chat, args=(s, s.name.rsplit("@", 1)[1]), daemon=True) for s in senders]
        try:
            for thread in threads:
                thread.start()
            wait_until(lambda: len(acked) >= 30, 20, lambda: f"the chat never got going: {failures[:5]}")

            # -- the fault ---------------------------------------------------------------------
            redis_set.primary.kill()
            killed_at = time.monotonic()
            # The watchers start typing only now: a `user_typing` travels through the queue alone.
            typists = [threading.Thread(target=type_on, args=(watcher,), daemon=True) for watcher in watchers.values()]
            threads += typists
            for typist in typists:
                typist.start()
            promoted_after = redis_set.wait_promoted(RESUME_WITHIN_S) - killed_at

            def left() -> float:  # every check below must pass within RESUME_WITHIN_S of the kill
                return max(0.5, RESUME_WITHIN_S - (time.monotonic() - killed_at))

            # Shared state: each instance's store answers again (its readiness check pings it).
            wait_until(lambda: all(shared_state_ok(s) for s in servers.values()), left(),
                       lambda: f"shared state not back within {RESUME_WITHIN_S}s of the kill")
            state_after = time.monotonic() - killed_at

            # Rate limits: while Redis was away each instance counted in its own memory; once an event
            # finds the new primary, both count in the shared counter again, which kept what was spent.
            probes = 0

            def counted_in_shared(where: str) -> bool:
                nonlocal probes
                before = shared_remaining()
                probes += 1
                assert limited[where].sio.call("ping", timeout=WAIT)["success"]
                return before is not None and shared_remaining() == before - 1

            wait_until(lambda: counted_in_shared("a") and counted_in_shared("b"), left(),
                       lambda: f"the instances did not count in the shared limit within {RESUME_WITHIN_S}s of the kill")
            remaining = shared_remaining()
            assert remaining is not None and LEFT_BEFORE - probes <= remaining < LEFT_BEFORE, (remaining, probes)
            half = remaining // 2
            left_a = spend(limited["a"], half)
            left_b = spend(limited["b"], remaining)
            limits_after = time.monotonic() - killed_at
            assert left_a == half, f"A refused after {left_a} of the {remaining} units left"
            assert left_b == remaining - half, f"B allowed {left_b}, {remaining - half} left: the counter is not shared"
            for where in "ab":
                refused = limited[where].sio.call("ping", timeout=WAIT)
                assert not refused["success"] and refused["error"]["code"] == "RATE_LIMITED", refused

            # The HTTP limits too: one counter for both instances again (Flask-Limiter's own fallback
            # to memory ends when its backoff next finds the storage answering).
            def http_shared() -> bool:
                first, second, third = (http_remaining(servers[where], reader) for where in "aba")
                return first is not None and second == first - 1 and third == first - 2

            wait_until(http_shared, left(), lambda: f"the HTTP rate limits were not shared again within "
                                                    f"{RESUME_WITHIN_S}s of the kill")
            http_after = time.monotonic() - killed_at

            # Presence: newcomers on each side are announced on the other and listed everywhere.
            late = {where: tab(LATE[where], where, reconnect=False) for where in "ab"}

            # Queue: the watchers' typing crosses between the instances again.
            def typing_seen(where: str, other: str) -> bool:
                return watchers[where].wait_for_any("user_typing", from_user(ids[WATCHERS[other]]), timeout=0)

            wait_until(lambda: typing_seen("a", "b") and typing_seen("b", "a"), left(),
                       lambda: f"the queue did not carry typing across instances within {RESUME_WITHIN_S}s of the kill")
            queue_after = time.monotonic() - killed_at

            # Room messages sent after the kill, from each side, reach the other side (through the
            # queue, or read from the database by the receiving instance to fill a gap).
            def crossed(where: str, other: str) -> bool:
                with lock:
                    fresh = {seq for mid, seq in acked.items() if sent_by[mid] == where and started_at[mid] > killed_at}
                return bool(fresh) and all(fresh & set(s.seqs(ROOM)) for s in senders if s.name.endswith("@" + other))

            wait_until(lambda: crossed("a", "b") and crossed("b", "a"), left(),
                       lambda: f"room delivery across instances did not resume within {RESUME_WITHIN_S}s of the kill")
            rooms_after = time.monotonic() - killed_at
            stop.set()  # the traffic ends here, within the senders' allowance (EVENT_LIMIT)
            for thread in threads:
                thread.join(10)

            for where, other in (("a", "b"), ("b", "a")):
                watchers[other].wait_for("user_online", from_user(ids[LATE[where]]), timeout=left())
            truth = everyone | {ids[name] for name in LATE.values()}
            wait_until(lambda: all(online_ids(s, reader) == truth for s in servers.values()), left(),
                       lambda: f"online lists after the failover: {[online_ids(s, reader) for s in servers.values()]}"
                               f", expected {truth}")
            presence_after = time.monotonic() - killed_at
            late["a"].sio.disconnect()
            watchers["b"].wait_for("user_offline", from_user(ids[LATE["a"]]))

            # The worker: a task sent through the Sentinels' primary runs, and its notification is live.
            from nexus.worker import make_celery

            client_env = {**worker_env, "NEXUS_INSTANCE_PATH": str(tmp_path / "celery-client")}
            celery = make_celery(Config.from_env(client_env))
            try:
                text_ = f"after the failover {uuid.uuid4().hex}"
                task = celery.tasks["nexus.worker.send_notification"]
                result = task.delay(int(ids[WATCHERS["b"]]), "Failover", text_)
                sent = result.get(timeout=TASK_TIMEOUT_S)
            finally:
                celery.close()
            assert watchers["b"].wait_for("notification", lambda n: n["message"] == text_) == sent
            worker_after = time.monotonic() - killed_at
        finally:
            stop.set()
            for thread in threads:
                thread.join(5)

        # Nothing acknowledged is lost: stored once, and seen by every member of the room (each stayed
        # connected, or would have caught up with `since`), none twice.
        assert not [f for f in failures if isinstance(f, dict) and f.get("code") != "UNAVAILABLE"], failures
        assert len(acked) > 30
        # During the failover REST answered 200, or 503 with a retry hint: never a 500.
        assert all(status == 503 and retry for status, retry in REFUSALS), REFUSALS
        assert stored(database_url, set(acked)) == set(acked)
        wanted = set(acked.values())
        for member in [*senders, *watchers.values()]:
            wait_until(lambda: wanted <= set(member.seqs(ROOM)), WAIT,
                       lambda: f"{member.name} misses {sorted(wanted - set(member.seqs(ROOM)))[:20]}")
            seqs = member.seqs(ROOM)
            assert len(seqs) == len(set(seqs)), f"{member.name} got repeats"
            assert member.sio.transport() == "websocket"
        after_kill = sum(1 for at in acked_at.values() if at > killed_at)
        print(f"\nSentinel failover: replica promoted {promoted_after:.1f}s after the kill; shared state back "
              f"after {state_after:.1f}s, event rate limits checked by {limits_after:.1f}s, HTTP limits shared "
              f"by {http_after:.1f}s, typing through the queue after {queue_after:.1f}s, room messages after "
              f"{rooms_after:.1f}s, presence after {presence_after:.1f}s, a Celery task's notification by "
              f"{worker_after:.1f}s; {len(acked)} messages acknowledged ({after_kill} after the kill), "
              f"{len(failures)} refused or unanswered sends retried, {len(REFUSALS)} REST answers 503")
        for server in servers.values():
            assert server.process.poll() is None, server.log()[-3000:]
