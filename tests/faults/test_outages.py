"""PostgreSQL and Redis restarted under traffic: answered UNAVAILABLE / 503 with a retry hint, never a 500
or an INTERNAL_ERROR, logged once per outage, and over by themselves.

The test runs its own PostgreSQL (initdb in a temporary folder, run as the `postgres` user) and
its own redis-server, each on a free port, so that stopping them disturbs nobody else. Three
instances (the Procfile's `web`) use them as database, shared state and message queue. While
WebSocket senders send `send_message` with a `clientMsgId` (retrying after `retryAfterMs`),
new sockets connect, and REST clients call the API, the dashboard and the health endpoints,
PostgreSQL is stopped (fast shutdown) and started, then Redis. Both are always stopped at the end.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
import socketio

from nexus.outages import RETRY_AFTER_MS
from tests.support import services
from tests.support.live import LiveServer, LiveServerFactory, Seeder
from tests.support.scale import wait_until

pytestmark = pytest.mark.live

INSTANCES = 3
SENDERS_PER_INSTANCE = 2
ROOM = "outage-room"
PASSWORD = "correct-horse-1"
DETECT_S = 10.0  # every instance has answered UNAVAILABLE within this after the stop
DOWN_S = 3.0  # how long the dependency stays down after that
RECOVER_S = 15.0  # every instance serves normally again within this after the start
MAX_RETRY_AFTER_MS = 10_000
MAX_LOUD_LINES = 30  # warnings and errors in one instance's log for both outages (about 11 seen)


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


# -- private services ------------------------------------------------------------------------


class PrivatePostgres:
    """A PostgreSQL cluster of this test's own: a temporary folder, a free port, trust auth."""

    def __init__(self, bin_dir: Path):
        import pwd

        self.bin = bin_dir
        self.port = services.free_port()
        self.root = Path(tempfile.mkdtemp(prefix="nexus-outage-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        owner = pwd.getpwnam("postgres")
        os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                          "--no-sync", "-E", "UTF8", timeout=60)

    def _as_postgres(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        result = subprocess.run(["runuser", "-u", "postgres", "--", *command], capture_output=True, text=True,
                                timeout=timeout)
        assert result.returncode == 0, f"{command[0]} failed: {result.stdout}{result.stderr}"
        return result

    def answers(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url, connect_timeout=2).close()
            return True
        except psycopg.Error:
            return False

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                          "-w", "-t", "30", "start", timeout=40)
        wait_until(self.answers, 15, "the private PostgreSQL does not answer")

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop",
                          timeout=40)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A redis-server of this test's own on a free port, without persistence."""

    def __init__(self, log_dir: Path):
        self.port = services.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_dir = log_dir
        self.process: subprocess.Popen | None = None

    def answers(self) -> bool:
        import redis

        try:
            client = redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=1)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.RedisError:
            return False

    def start(self) -> None:
        log = open(self.log_dir / "redis.log", "ab")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(self.answers, 10, "the private Redis does not answer")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


# -- traffic ---------------------------------------------------------------------------------


@dataclass
class Record:
    """Everything the clients saw, stamped with time.monotonic()."""

    acks: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)  # (at, instance url, ack)
    acked: dict[str, str] = field(default_factory=dict)  # clientMsgId -> message id
    timeouts: int = 0
    http: list[tuple[float, str, str, int, dict[str, str], str]] = field(default_factory=list)
    connects: list[tuple[float, str, dict[str, Any] | None]] = field(default_factory=list)  # None: accepted
    lock: threading.Lock = field(default_factory=threading.Lock)

    def unavailable_acks_since(self, url: str, since: float) -> int:
        with self.lock:
            return sum(1 for at, where, ack in self.acks
                       if at >= since and where == url and _code(ack) == "UNAVAILABLE")

    def ok_acks_since(self, url: str, since: float) -> int:
        with self.lock:
            return sum(1 for at, where, ack in self.acks if at >= since and where == url and ack.get("success"))

    def first_ok(self, url: str, since: float) -> dict[str, float]:
        """Seconds from `since` to the first success of each kind of call on one instance."""
        firsts: dict[str, float] = {}
        with self.lock:
            for at, where, ack in self.acks:
                if at >= since and where == url and ack.get("success"):
                    firsts.setdefault("send_message", round(at - since, 1))
            for at, where, path, status, _, _ in self.http:
                if at >= since and where == url and status == 200:
                    firsts.setdefault(path, round(at - since, 1))
        return firsts

    def http_since(self, url: str, path: str, since: float) -> list[int]:
        with self.lock:
            return [status for at, where, p, status, _, _ in self.http if at >= since and where == url and p == path]


def _code(ack: dict[str, Any]) -> str | None:
    return (ack.get("error") or {}).get("code") if isinstance(ack, dict) else None


class Sender(threading.Thread):
    """A WebSocket client that sends numbered messages, each until it is acknowledged: after
    `retryAfterMs` on UNAVAILABLE, at once on a lost ack, always with the same clientMsgId."""

    def __init__(self, name: str, token: str, url: str, record: Record, stop: threading.Event):
        super().__init__(daemon=True, name=f"sender-{name}")
        self.label, self.url, self.record, self.halt = name, url, record, stop
        self.sio = socketio.Client(reconnection=True, reconnection_delay=0.2, reconnection_delay_max=1)
        self.token = token

    def open(self) -> None:
        self.sio.connect(self.url, auth={"token": self.token}, transports=["websocket"], wait_timeout=10)
        assert self.sio.transport() == "websocket"
        ack = self.sio.call("join_room", ROOM, timeout=10)
        assert ack["success"], ack

    def run(self) -> None:
        for number in itertools.count(1):
            if self.halt.is_set():
                return
            client_msg_id = f"{self.label}-{number}"
            while not self.halt.is_set():
                try:
                    ack = self.sio.call("send_message", {"roomId": ROOM, "content": f"{self.label} #{number}",
                                                         "clientMsgId": client_msg_id}, timeout=10)
                except socketio.exceptions.TimeoutError:
                    with self.record.lock:
                        self.record.timeouts += 1
                    continue
                except socketio.exceptions.SocketIOError:  # reconnecting
                    time.sleep(0.2)
                    continue
                if _code(ack) == "NOT_IN_ROOM":  # reconnected: the new socket joins the room, then sends again
                    self.rejoin()
                    continue
                with self.record.lock:
                    self.record.acks.append((time.monotonic(), self.url, ack))
                if ack.get("success"):
                    with self.record.lock:
                        self.record.acked[client_msg_id] = ack["messageId"]
                    break
                if _code(ack) == "UNAVAILABLE":
                    hint = ack["error"].get("retryAfterMs") or 0
                    self.halt.wait(min(hint, MAX_RETRY_AFTER_MS) / 1000)
                    continue
                break  # anything else is recorded and asserted on
            self.halt.wait(0.05)

    def rejoin(self) -> None:
        with contextlib.suppress(socketio.exceptions.SocketIOError):
            ack = self.sio.call("join_room", ROOM, timeout=10)
            if _code(ack) == "UNAVAILABLE":
                self.halt.wait(min(ack["error"].get("retryAfterMs") or 0, MAX_RETRY_AFTER_MS) / 1000)

    def close(self) -> None:
        self.sio.reconnection = False
        with contextlib.suppress(Exception):
            self.sio.disconnect()


class Connector(threading.Thread):
    """Opens a new socket on each instance in turn, records whether it was accepted or the refusal."""

    def __init__(self, token: str, urls: list[str], record: Record, stop: threading.Event):
        super().__init__(daemon=True, name="connector")
        self.token, self.urls, self.record, self.halt = token, urls, record, stop

    def run(self) -> None:
        for url in itertools.cycle(self.urls):
            if self.halt.wait(0.2):
                return
            refusal: list[Any] = []
            sio = socketio.Client(reconnection=False)
            sio.on("connect_error", lambda data: refusal.append(data))
            try:
                sio.connect(url, auth={"token": self.token}, transports=["websocket"], wait_timeout=10)
                outcome = None
            except socketio.exceptions.ConnectionError:
                outcome = refusal[0] if refusal else {"message": "no CONNECT_ERROR packet"}
            finally:
                with contextlib.suppress(Exception):
                    sio.disconnect()
            with self.record.lock:
                self.record.connects.append((time.monotonic(), url, outcome))


class Poller(threading.Thread):
    """REST calls to every instance in turn: the API, a dashboard page, the health endpoints."""

    def __init__(self, token: str, username: str, urls: list[str], dashboard: requests.Session, record: Record,
                 stop: threading.Event):
        super().__init__(daemon=True, name="poller")
        self.urls, self.record, self.halt, self.dashboard = urls, record, stop, dashboard
        self.auth = {"Authorization": f"Bearer {token}"}
        self.username = username

    def run(self) -> None:
        plain = requests.Session()
        calls = [
            ("/api/users/online", lambda s, u: s.get(u + "/api/users/online", headers=self.auth, timeout=10)),
            ("/api/rooms", lambda s, u: s.get(u + "/api/rooms", headers=self.auth, timeout=10)),
            ("/api/auth/login", lambda s, u: s.post(u + "/api/auth/login", timeout=10,
                                                    json={"username": self.username, "password": PASSWORD})),
            ("/health", lambda s, u: s.get(u + "/health", timeout=10)),
            ("/health/ready", lambda s, u: s.get(u + "/health/ready", timeout=10)),
        ]
        while not self.halt.wait(0.1):
            for url in self.urls:
                for path, call in calls:
                    self._call(plain, url, path, call)
                self._call(self.dashboard, url, "/dashboard/",
                           lambda s, u: s.get(u + "/dashboard/", timeout=10, allow_redirects=False))

    def _call(self, session: requests.Session, url: str, path: str, call: Callable) -> None:
        try:
            response = call(session, url)
            entry = (time.monotonic(), url, path, response.status_code, dict(response.headers), response.text[:2000])
        except requests.RequestException as exc:
            entry = (time.monotonic(), url, path, -1, {}, repr(exc))
        with self.record.lock:
            self.record.http.append(entry)


def dashboard_session(url: str, username: str) -> requests.Session:
    session = requests.Session()
    page = session.get(url + "/dashboard/login", timeout=10).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    signed_in = session.post(url + "/dashboard/login", timeout=10, allow_redirects=False,
                             data={"username": username, "password": PASSWORD, "csrf_token": csrf})
    assert signed_in.status_code in (302, 303), signed_in.text[:500]
    assert session.get(url + "/dashboard/", timeout=10, allow_redirects=False).status_code == 200
    return session


# -- the scenario ----------------------------------------------------------------------------


@pytest.fixture
def private_services(tmp_path):
    bin_dir = _pg_bin()
    if bin_dir is None or shutil.which("redis-server") is None or shutil.which("runuser") is None:
        message = "needs PostgreSQL's server binaries (/usr/lib/postgresql/*/bin), redis-server and runuser"
        if services.services_required():
            pytest.fail(message)
        pytest.skip(message)
    if os.geteuid() != 0:
        message = "runs PostgreSQL as the postgres user (runuser): needs root"
        if services.services_required():
            pytest.fail(message)
        pytest.skip(message)
    postgres = redis_server = None
    try:
        postgres = PrivatePostgres(bin_dir)
        postgres.start()
        redis_server = PrivateRedis(tmp_path)
        redis_server.start()
        yield postgres, redis_server
    finally:
        if redis_server is not None:
            redis_server.stop()
        if postgres is not None:
            postgres.destroy()


def _log_lines(server: LiveServer, pattern: str) -> list[str]:
    return [line for line in server.log().splitlines() if re.search(pattern, line)]


@pytest.mark.timeout(170)
def test_database_and_redis_restarts_are_answered_unavailable_and_recovered(tmp_path, private_services):
    postgres, redis_server = private_services
    factory = LiveServerFactory(tmp_path, secret=secrets.token_urlsafe(40))
    stop = threading.Event()
    record = Record()
    workers: list[threading.Thread] = []
    senders: list[Sender] = []
    try:
        seeder = Seeder(postgres.url, factory.secret, tmp_path / "seeder")
        factory.seeders.append(seeder)
        seeder.user("boss", password=PASSWORD, role="admin")
        names = [f"sender{n}" for n in range(INSTANCES * SENDERS_PER_INSTANCE)]
        for name in names + ["watcher"]:
            seeder.user(name, password=PASSWORD)
        env = {
            "REDIS_URL": redis_server.url,
            "MESSAGE_QUEUE_URL": redis_server.url,
            "SOCKETIO_REDIS_PREFIX": "outage-" + uuid.uuid4().hex[:8],
            "NEXUS_HTTP_RATE_LIMIT": "100000 per minute",
            "NEXUS_LOGIN_RATE_LIMIT": "100000 per minute",
        }
        servers = [factory.start(postgres.url, kind="procfile", wait=False,
                                 env={**env, "NEXUS_INSTANCE_ID": f"outage-{n}"}) for n in range(INSTANCES)]
        for server in servers:
            server.wait_ready(45)
        urls = [server.url for server in servers]
        for url in urls:
            wait_until(lambda: requests.get(url + "/health/ready", timeout=3).status_code == 200, 20,
                  f"{url} not ready")

        senders = [Sender(name, seeder.token(name), urls[index % INSTANCES], record, stop)
                   for index, name in enumerate(names)]
        for sender in senders:
            sender.open()
        watcher_token = seeder.token("watcher")
        workers = [*senders, Connector(watcher_token, urls, record, stop),
                   Poller(watcher_token, "watcher", urls, dashboard_session(urls[0], "boss"), record, stop)]
        for worker in workers:
            worker.start()
        started = time.monotonic()
        for url in urls:
            wait_until(lambda: record.ok_acks_since(url, started) > 0, 15, f"no message acknowledged on {url}")

        # -- PostgreSQL: fast shutdown, down for a while, started again --------------------------
        stopped = time.monotonic()
        postgres.stop("fast")
        for url in urls:
            wait_until(lambda: record.unavailable_acks_since(url, stopped) > 0
                  and 503 in record.http_since(url, "/api/rooms", stopped), DETECT_S,
                  f"{url} never answered UNAVAILABLE while PostgreSQL was down")
        time.sleep(DOWN_S)  # the outage lasts: refusals keep coming, the log must not grow per request
        postgres.start()
        back = time.monotonic()
        for url in urls:
            wait_until(lambda: record.ok_acks_since(url, back) > 0
                  and 200 in record.http_since(url, "/api/rooms", back)
                  and 200 in record.http_since(url, "/api/auth/login", back)
                  and 200 in record.http_since(url, "/dashboard/", back), RECOVER_S,
                  f"{url} did not serve again within {RECOVER_S}s of PostgreSQL's return")
        database_recovery_s = time.monotonic() - back
        database_back = back

        # -- Redis: stopped, down for a while, started again (empty) -----------------------------
        stopped = time.monotonic()
        redis_server.stop()
        for url in urls:
            wait_until(lambda: 503 in record.http_since(url, "/api/users/online", stopped), DETECT_S,
                  f"{url} never answered 503 while Redis was down")
        time.sleep(DOWN_S)
        redis_server.start()
        back = time.monotonic()
        for url in urls:
            wait_until(lambda: record.ok_acks_since(url, back) > 0
                  and 200 in record.http_since(url, "/api/users/online", back)
                  and 200 in record.http_since(url, "/health/ready", back), RECOVER_S,
                  f"{url} did not serve again within {RECOVER_S}s of Redis's return")
        redis_recovery_s = time.monotonic() - back
        redis_back = back
        wait_until(lambda: all(_log_lines(server, r"nexus\.outages: redis available again") for server in servers),
              RECOVER_S, "the end of the Redis outage was not logged on every instance")
        stop.set()
        for worker in workers:
            worker.join(15)

        # -- what the clients saw -----------------------------------------------------------------
        with record.lock:
            acks = [ack for _, _, ack in record.acks]
            http = list(record.http)
            connects = list(record.connects)
            acked = dict(record.acked)
        codes = {_code(ack) for ack in acks if not ack.get("success")}
        assert codes <= {"UNAVAILABLE"}, f"acks other than success/UNAVAILABLE: {codes}"
        unavailable = [ack for ack in acks if _code(ack) == "UNAVAILABLE"]
        assert unavailable, "no send_message was refused UNAVAILABLE"
        for ack in unavailable:
            assert 0 < ack["error"]["retryAfterMs"] <= MAX_RETRY_AFTER_MS, ack
            assert ack["error"]["details"]["retryAfterMs"] == ack["error"]["retryAfterMs"], ack

        statuses = [(path, status) for _, _, path, status, _, _ in http]
        assert not [entry for entry in http if entry[3] == 500 or entry[3] < 0], \
            [entry[:4] + (entry[5][:300],) for entry in http if entry[3] == 500 or entry[3] < 0][:5]
        assert {status for path, status in statuses if path == "/health"} == {200}
        refused = [entry for entry in http if entry[3] == 503]
        assert {path for _, _, path, _, _, _ in refused} >= {"/api/rooms", "/api/users/online", "/api/auth/login",
                                                             "/dashboard/", "/health/ready"}
        for _, url, path, _, headers, body in refused:
            # The outage's own hint, not the rate-limit window's that Flask-Limiter puts on every answer.
            assert headers.get("Retry-After") == str(RETRY_AFTER_MS // 1000), (url, path, headers)
            if path.startswith("/api/"):
                assert '"code":"UNAVAILABLE"' in body.replace(" ", ""), (path, body)
            elif path.startswith("/dashboard/"):
                assert headers["Content-Type"].startswith("text/html") and "UNAVAILABLE" in body, body
        unexpected = {status for path, status in statuses} - {200, 302, 503}
        assert not unexpected, [entry[:4] for entry in http if entry[3] in unexpected][:5]

        refusals = [outcome for _, _, outcome in connects if outcome is not None]
        assert refusals, "no socket connection was refused while PostgreSQL was down"
        for outcome in refusals:
            data = outcome.get("data") or {}
            assert data.get("code") == "UNAVAILABLE" and data.get("retryAfterMs", 0) > 0, outcome

        # -- one line when each outage starts, one when it ends; no traceback ------------------
        for server in servers:
            for dependency in ("database", "redis"):
                started_lines = _log_lines(server, rf"nexus\.outages: {dependency} unavailable")
                ended_lines = _log_lines(server, rf"nexus\.outages: {dependency} available again")
                assert len(started_lines) == 1 and len(ended_lines) == 1, (server.url, started_lines, ended_lines)
            text = server.log()
            assert "Traceback" not in text and "internal error ref=" not in text, text[-6000:]
            # Each subsystem says a few words per outage (the queue, the outbox): never one per request.
            loud = [line for line in text.splitlines() if re.search(r" (WARNING|ERROR|CRITICAL) ", line)]
            assert len(loud) <= MAX_LOUD_LINES, "\n".join(loud)

        # -- every acknowledged message is stored exactly once -----------------------------------
        import psycopg

        with psycopg.connect(postgres.url) as connection:
            rows = connection.execute(
                "SELECT client_msg_id, count(*), min(id) FROM messages WHERE client_msg_id = ANY(%s) "
                "GROUP BY client_msg_id", (list(acked),)).fetchall()
        stored = {client_msg_id: (count, first) for client_msg_id, count, first in rows}
        assert set(stored) == set(acked), sorted(set(acked) - set(stored))[:10]
        assert all(count == 1 for count, _ in stored.values()), {k: v for k, v in stored.items() if v[0] != 1}
        wrong = {key: (message_id, stored[key][1]) for key, message_id in acked.items()
                 if str(stored[key][1]) != str(message_id)}
        assert not wrong, f"acknowledged with another message's id: {wrong}"
        print(f"\n{len(acked)} messages acknowledged, {len(unavailable)} UNAVAILABLE acks, "
              f"{len(refused)} 503s, {len(refusals)} refused connects, {record.timeouts} lost acks; "
              f"served again {database_recovery_s:.1f}s after PostgreSQL, {redis_recovery_s:.1f}s after Redis")
        for url in urls:
            print(f"{url}: after PostgreSQL {record.first_ok(url, database_back)}; "
                  f"after Redis {record.first_ok(url, redis_back)}")
    finally:
        stop.set()
        for sender in senders:
            sender.close()
        for worker in workers:
            worker.join(5)
        factory.stop_all()
