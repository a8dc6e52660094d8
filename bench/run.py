#!/usr/bin/env python3
"""Nexus beside Node socket.io and two Python peers under the same load: one command, a table on stdout,
JSON in bench/results/.

Run from the repository with the project's virtual environment:

    .venv/bin/python bench/run.py                       # every scenario, every server (about 15 min)
    .venv/bin/python bench/run.py --targets nexus       # Nexus only; the others' figures from the last JSON
    .venv/bin/python bench/run.py --quick               # tiny sizes, 2 s durations (the smoke test)

Servers (--targets): nexus; node, the Node socket.io reference every target ratio is read against;
flask, plain Flask-SocketIO on gevent-websocket (bench/peers/flask_peer.py); asgi, python-socketio's
ASGI server under uvicorn (bench/peers/asgi_peer.py). The reference and the peers answer the same
events with none of Nexus's work.

Scenarios (bench/README.md says what each measures):
  a     connect N clients (--clients, 1000): time to all connected, memory per idle connection
  a10k  the same with 10,000 clients (--clients-10k): connections held
  b     fan-out: R receivers in one room (--receivers, 1000), one sender as fast as acks allow
  c     fan-out at a fixed rate (--rate, 5 msg/s) to R receivers: latency
  d     round trips: C clients (--rtt-clients, 50) doing ping with ack in a loop
  e     cost growth: fan-out at 100/1000/5000 receivers (--cost-receivers), server CPU per delivery;
        get_history with 10^3/10^5/10^6 stored messages (--history-sizes; Nexus only); not the peers
  f     fan-out with two instances on Redis, receivers split half/half (Node: @socket.io/redis-adapter)
  g     persisted chat: 200 senders (--chat-senders) in 20 rooms (--chat-rooms) of 1000 clients
        (--chat-clients), each send acked after its commit; Nexus on its database, Node storing each
        message in PostgreSQL with `pg` (a database of its own); not the peers (no database)
  h     reconnect storm: 5,000 idle clients (--storm-clients) dropped at once and reopened, at most
        --storm-concurrency (500) handshakes in flight; a control client pings every 20 ms meanwhile

Every server runs pinned with `taskset -c 0` (--server-cpus), the generator with `taskset -c 1`
(--generator-cpus). Servers are started fresh for each scenario and stopped by PID (SIGTERM, then
SIGKILL), also on Ctrl-C. Nexus runs as the Procfile's `web` command (gunicorn, one gevent worker)
with NEXUS_ENV=production on a fresh PostgreSQL database `nexus_bench` (--database sqlite for a
file instead). The peers and --profile need the bench extra: `.venv/bin/pip install -e '.[bench]'`.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import json
import math
import os
import platform
import queue
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
WORK = BENCH / ".work"
LOADGEN = BENCH / "load" / "loadgen.js"
NODE_SERVER = BENCH / "node" / "server.js"
PEERS = BENCH / "peers"
VENV_BIN = Path(sys.executable).parent

PG_ADMIN_URL = os.environ.get("NEXUS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_DATABASE = "nexus_bench"
# The Node reference's own database for the persisted-chat scenario (one per run, dropped afterwards).
PG_NODE_DATABASE = "nexus_bench_node"
REDIS_URL = os.environ.get("NEXUS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
BENCH_ROOM = "bench"
CHAT_ROOM_PREFIX = "chat_"
ALL_SCENARIOS = ("a", "a10k", "b", "c", "d", "e", "f", "g", "h")
DEFAULT_SCENARIOS = "a,a10k,b,c,d,e,f,g,h"
# Run order: the reference first, Nexus, then the peers.
TARGETS = ("node", "nexus", "flask", "asgi")
PEER_TARGETS = ("node", "flask", "asgi")  # everything Nexus is compared with
NAMES = {"nexus": "Nexus", "node": "Node", "flask": "Flask-SocketIO", "asgi": "python-socketio ASGI"}
# Scenarios a server does not take part in (shown as "—"): e's history and g need a database, and the
# cost-growth runs of e are Nexus's own question.
NOT_FOR = {"flask": ("e", "g"), "asgi": ("e", "g"), "node": ("e.history",)}
WANTED_NOFILE = 65536

# What "flat" means for the growth targets: the worst case over the best case.
FLAT_COST = 1.25
FLAT_HISTORY = 1.5
# The reconnect storm's control client: a ping every CONTROL_INTERVAL_MS, p99 at most CONTROL_P99_MS.
CONTROL_INTERVAL_MS = 20
CONTROL_P99_MS = 250.0


def log(text: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[bench {stamp}] {text}", file=sys.stderr, flush=True)


# -- options ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scenarios", default=DEFAULT_SCENARIOS,
                        help=f"comma-separated, from {','.join(ALL_SCENARIOS)}, or all (default: all)")
    parser.add_argument("--targets", default="nexus,node,flask,asgi",
                        help="from nexus, node, flask, asgi (default all four); the figures of the ones left "
                             "out come from the last JSON")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and 2 s durations, SQLite unless --database is given (the smoke test)")
    parser.add_argument("--label", default="", help="free text stored in the JSON (what changed)")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default=None,
                        help=f"Nexus's database: PostgreSQL {PG_DATABASE} on {PG_ADMIN_URL} (default) or a SQLite file")
    parser.add_argument("--keep-db", action="store_true",
                        help="reuse the seeded database when its users and history rooms match (skips the 10^6 insert)")
    parser.add_argument("--profile", metavar="SCENARIO", default=None,
                        help="run `py-spy record` on the Nexus worker during that scenario's measurement "
                             "(e.g. b, d, e); needs py-spy (pip install -e '.[bench]'); the figures of a "
                             "profiled run are distorted by the sampling")
    parser.add_argument("--profile-format", choices=("speedscope", "flamegraph"), default="speedscope",
                        help="py-spy output: speedscope JSON (default) or an SVG flame graph")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="scratch folder: tokens, server logs, the SQLite database (default bench/.work)")
    parser.add_argument("--output", type=Path, default=None,
                        help="the JSON file (default bench/results/latest.json; quick runs: bench/results/quick.json)")
    sizes = parser.add_argument_group("sizes (defaults in brackets; --quick makes them tiny)")
    sizes.add_argument("--clients", type=int, default=None, help="a: clients to connect [1000]")
    sizes.add_argument("--clients-10k", type=int, default=None, help="a10k: clients to connect [10000]")
    sizes.add_argument("--receivers", type=int, default=None, help="b, c, f: receivers in the room [1000]")
    sizes.add_argument("--window", type=int, default=1, help="b, e, f: sends in flight before waiting for an ack [1]")
    sizes.add_argument("--rate", type=float, default=5.0, help="c: messages per second [5]")
    sizes.add_argument("--rtt-clients", type=int, default=None, help="d: clients doing ping round trips [50]")
    sizes.add_argument("--cost-receivers", default=None, help="e: receivers of the cost runs [100,1000,5000]")
    sizes.add_argument("--history-sizes", default=None, help="e: messages stored per history room [1000,100000,1000000]")
    sizes.add_argument("--duration", type=float, default=None,
                       help="seconds of sending in b and g [10]; c, d, f and e's fan-out runs take half")
    sizes.add_argument("--chat-clients", type=int, default=None, help="g: clients, split into the rooms [1000]")
    sizes.add_argument("--chat-rooms", type=int, default=None, help="g: rooms [20]")
    sizes.add_argument("--chat-senders", type=int, default=None,
                       help="g: senders, spread evenly over the rooms; the other clients receive [200]")
    sizes.add_argument("--storm-clients", type=int, default=None, help="h: clients dropped and reconnected [5000]")
    sizes.add_argument("--storm-concurrency", type=int, default=500,
                       help="h: reconnect handshakes in flight at once [500]")
    sizes.add_argument("--users", type=int, default=None,
                       help="bench accounts the clients take turns with [100]: presence announces a user once, "
                            "on their first socket, so N distinct users would add an O(N^2) user_online storm")
    sizes.add_argument("--settle", type=float, default=None, help="a: seconds to settle before reading RSS [3]")
    pins = parser.add_argument_group("pinning")
    pins.add_argument("--server-cpus", default="0", help="taskset CPU list of the servers [0]")
    pins.add_argument("--generator-cpus", default="1", help="taskset CPU list of the load generator [1]")
    args = parser.parse_args(argv)

    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if args.scenarios == ["all"]:
        args.scenarios = list(ALL_SCENARIOS)
    unknown = [s for s in args.scenarios if s not in ALL_SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(ALL_SCENARIOS)}")
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not args.targets or any(t not in TARGETS for t in args.targets):
        parser.error(f"--targets takes one or more of {', '.join(TARGETS)}")
    args.targets = [t for t in TARGETS if t in args.targets]  # the run order
    if args.profile and args.profile not in ALL_SCENARIOS:
        parser.error(f"--profile takes one scenario of {', '.join(ALL_SCENARIOS)}")

    quick = args.quick

    def pick(value: Any, normal: Any, small: Any) -> Any:
        return value if value is not None else (small if quick else normal)

    args.database = args.database or ("sqlite" if quick else "postgres")
    args.clients = pick(args.clients, 1000, 20)
    args.clients_10k = pick(args.clients_10k, 10_000, 40)
    args.receivers = pick(args.receivers, 1000, 20)
    args.rtt_clients = pick(args.rtt_clients, 50, 5)
    args.cost_receivers = [int(x) for x in pick(args.cost_receivers, "100,1000,5000", "5,10,20").split(",")]
    args.history_sizes = [int(x) for x in pick(args.history_sizes, "1000,100000,1000000", "100,500,1000").split(",")]
    args.duration = pick(args.duration, 10.0, 2.0)
    args.users = pick(args.users, 100, 10)
    args.chat_clients = pick(args.chat_clients, 1000, 20)
    args.chat_rooms = pick(args.chat_rooms, 20, 2)
    args.chat_senders = pick(args.chat_senders, 200, 4)
    args.storm_clients = pick(args.storm_clients, 5000, 40)
    if args.chat_clients < args.chat_rooms or args.chat_senders < args.chat_rooms:
        parser.error("g needs at least one client and one sender per room")
    args.settle = pick(args.settle, 3.0, 0.2)
    args.output = args.output or RESULTS / ("quick.json" if quick else "latest.json")
    return args


def parameters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "quick": args.quick,
        "database": args.database,
        "clients": args.clients,
        "clients10k": args.clients_10k,
        "receivers": args.receivers,
        "window": args.window,
        "rate": args.rate,
        "rttClients": args.rtt_clients,
        "costReceivers": args.cost_receivers,
        "historySizes": args.history_sizes,
        "durationS": args.duration,
        "users": args.users,
        "settleS": args.settle,
        "chatClients": args.chat_clients,
        "chatRooms": args.chat_rooms,
        "chatSenders": args.chat_senders,
        "stormClients": args.storm_clients,
        "stormConcurrency": args.storm_concurrency,
    }


# -- processes ------------------------------------------------------------------------------

_live: list[subprocess.Popen] = []


def _stop_everything() -> None:
    for process in list(_live):
        stop_process(process, grace=3)


atexit.register(_stop_everything)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(f"bench: stopped by signal {signum}")


def stop_process(process: subprocess.Popen, grace: float = 8.0) -> int | None:
    """SIGTERM the process (its group: it was started in a session of its own), SIGKILL after `grace`."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            log(f"pid {process.pid} did not stop within {grace:.0f}s: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
    else:
        # The leader is gone; anything left in its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    if process in _live:
        _live.remove(process)
    return process.returncode


def hold_lock(path: Path, what: str, wait_s: float = 1800) -> Any:
    """An exclusive lock for the run's shared things (the work folder, the PostgreSQL database): a second
    run started meanwhile waits for the first instead of dropping its database and tokens under it."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    deadline = time.monotonic() + wait_s
    announced = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            return handle  # kept open (and locked) until the process exits
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: {what} is still in use by another run after {wait_s:.0f}s") from None
            if not announced:
                handle.seek(0)
                log(f"another bench run (pid {handle.read().strip() or '?'}) is using {what}; waiting for it")
                announced = True
            time.sleep(2)


def raise_nofile() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE for this process and its children (10,000 clients need ~20,000 descriptors)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted_hard in (max(hard, WANTED_NOFILE), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(WANTED_NOFILE, wanted_hard), wanted_hard))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found.extend(int(x) for x in handle.read().split())
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes, from /proc/<pid>/stat."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def rss_kib(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    return None


def wait_healthy(url: str, process: subprocess.Popen, log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; log {log_path}:\n{tail(log_path)}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.2)
    raise RuntimeError(f"server not healthy after {timeout:.0f}s; log {log_path}:\n{tail(log_path)}")


def tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def json_level(line: str) -> str | None:
    """The level of a JSON log line (Nexus in production), None for any other line."""
    if not line.startswith("{"):
        return None
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    level = entry.get("level") if isinstance(entry, dict) else None
    return str(level).upper() if level is not None else None


def log_problems(path: Path) -> dict[str, Any]:
    """Warnings, errors and tracebacks a server logged during a scenario (the figures are not trusted blindly)."""
    counts = {"warning": 0, "error": 0, "traceback": 0}
    samples: list[str] = []
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            upper = line.upper()
            found = False
            level = json_level(line)  # a production line (JSON): its level and exception fields
            if "TRACEBACK" in upper if level is None else '"exception"' in line:
                counts["traceback"] += 1
            if level in ("ERROR", "CRITICAL") if level is not None else ("ERROR" in upper or "CRITICAL" in upper):
                counts["error"] += 1
                found = True
            elif level == "WARNING" if level is not None else "WARN" in upper:
                counts["warning"] += 1
                found = True
            if found and len(samples) < 5:
                samples.append(line[:300])
    return {**counts, "samples": samples}


# -- servers --------------------------------------------------------------------------------


@dataclass
class Server:
    """One running server process (for Nexus and the Flask-SocketIO peer the gunicorn master; its worker
    does the work)."""

    target: str
    url: str
    process: subprocess.Popen
    log_path: Path

    def worker_pids(self) -> list[int]:
        if self.target in ("nexus", "flask"):
            return children_of(self.process.pid) or [self.process.pid]
        return [self.process.pid]

    def all_pids(self) -> list[int]:
        return [self.process.pid, *[p for p in self.worker_pids() if p != self.process.pid]]

    def rss_kib(self) -> int:
        return sum(rss_kib(pid) or 0 for pid in self.worker_pids())


@dataclass
class Bench:
    """The run's settings and shared state."""

    args: argparse.Namespace
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    database_url: str = ""
    tokens_file: Path = field(default_factory=lambda: WORK / "tokens.json")
    user_count: int = 0
    history_rooms: dict[str, int] = field(default_factory=dict)
    stamp: str = field(default_factory=lambda: dt.datetime.now().strftime("%Y%m%d-%H%M%S"))

    @property
    def max_sockets_per_user(self) -> int:
        # In the reconnect storm a client's new socket may arrive before the server has seen its old one
        # close, so an account can briefly hold twice its share.
        most = max(self.args.clients, self.args.receivers, *self.args.cost_receivers, self.args.chat_clients,
                   self.args.clients_10k if "a10k" in self.args.scenarios else 0,
                   2 * (self.args.storm_clients + 1) if "h" in self.args.scenarios else 0) + 20
        return min(1000, math.ceil(most / max(1, self.user_count)) + 5)

    def taskset(self, cpus: str) -> list[str]:
        return ["taskset", "-c", cpus] if shutil.which("taskset") and cpus else []

    def start_node(self, name: str, *, redis_key: str | None = None, pg_url: str | None = None) -> Server:
        port = free_port()
        log_path = WORK / "logs" / f"node-{name}.log"
        command = [*self.taskset(self.args.server_cpus), "node", str(NODE_SERVER), "--port", str(port)]
        if redis_key:
            command += ["--redis", REDIS_URL, "--redis-key", redis_key]
        if pg_url:
            command += ["--pg", pg_url]
        return self._start("node", command, dict(os.environ), port, log_path)

    def peer_env(self, channel: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_PEER_")}
        env.update({"PATH": str(VENV_BIN) + os.pathsep + env.get("PATH", ""), "PYTHONUNBUFFERED": "1"})
        if channel:
            env.update({"BENCH_PEER_REDIS_URL": REDIS_URL, "BENCH_PEER_CHANNEL": channel})
        return env

    def start_flask(self, name: str, *, channel: str | None = None) -> Server:
        """Flask-SocketIO as its documentation deploys it: gunicorn, one gevent-websocket worker."""
        port = free_port()
        log_path = WORK / "logs" / f"flask-{name}.log"
        command = [*self.taskset(self.args.server_cpus), str(VENV_BIN / "gunicorn"),
                   "-k", "geventwebsocket.gunicorn.workers.GeventWebSocketWorker", "-w", "1",
                   "--worker-connections", "50000", "--timeout", "30", "--graceful-timeout", "5",
                   "--log-level", "warning", "--chdir", str(PEERS), "--bind", f"127.0.0.1:{port}", "flask_peer:app"]
        return self._start("flask", command, self.peer_env(channel), port, log_path)

    def start_asgi(self, name: str, *, channel: str | None = None) -> Server:
        """python-socketio's AsyncServer under uvicorn, one process, WebSocket by the websockets package."""
        port = free_port()
        log_path = WORK / "logs" / f"asgi-{name}.log"
        command = [*self.taskset(self.args.server_cpus), str(VENV_BIN / "python"), "-m", "uvicorn",
                   "--app-dir", str(PEERS), "--host", "127.0.0.1", "--port", str(port),
                   "--ws", "websockets-sansio", "--backlog", "2048", "--timeout-graceful-shutdown", "5",
                   "--log-level", "warning", "--no-access-log", "asgi_peer:app"]
        return self._start("asgi", command, self.peer_env(channel), port, log_path)

    def start_nexus(self, name: str, *, extra_env: dict[str, str] | None = None) -> Server:
        port = free_port()
        log_path = WORK / "logs" / f"nexus-{name}.log"
        env = self.nexus_env()
        env.update({"PORT": str(port), "NEXUS_INSTANCE_ID": f"bench-{name}-{port}"})
        env.update(extra_env or {})
        cpus = " ".join(self.taskset(self.args.server_cpus))
        command = ["bash", "-c", f"exec {cpus} {procfile_command('web')}"]
        return self._start("nexus", command, env, port, log_path)

    def nexus_env(self) -> dict[str, str]:
        inherited = {
            k: v for k, v in os.environ.items()
            if not k.startswith(("NEXUS_", "SOCKETIO_", "REDIS_", "JWT_")) and k not in (
                "DATABASE_URL", "MESSAGE_QUEUE_URL", "CELERY_BROKER_URL", "LOG_LEVEL", "NODE_ENV", "DEBUG", "PORT")
        }
        return {
            **inherited,
            "PATH": str(VENV_BIN) + os.pathsep + inherited.get("PATH", ""),
            "NEXUS_ENV": "production",
            "NEXUS_INSTANCE_PATH": str(WORK / "instance"),
            "DATABASE_URL": self.database_url,
            "JWT_SECRET": self.secret,
            "JWT_ACCESS_TOKEN_EXPIRES_S": "86400",
            "FRONTEND_URL": "http://127.0.0.1",
            "NEXUS_DEMO_USERS": "0",
            "NEXUS_AUTO_MIGRATE": "0",
            "LOG_LEVEL": "WARNING",
            "SOCKETIO_RATE_LIMIT_MAX_REQUESTS": "1000000",
            "NEXUS_MAX_SOCKETS_PER_USER": str(self.max_sockets_per_user),
            "NEXUS_SHUTDOWN_GRACE_S": "3",
            "PYTHONUNBUFFERED": "1",
        }

    def _start(self, target: str, command: list[str], env: dict[str, str], port: int, log_path: Path) -> Server:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(log_path, "wb")
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        handle.close()
        _live.append(process)
        server = Server(target, f"http://127.0.0.1:{port}", process, log_path)
        wait_healthy(server.url, process, log_path)
        return server


def procfile_command(process: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process:
            return command.strip()
    raise KeyError(process)


# -- database -------------------------------------------------------------------------------


def prepare_database(bench: Bench) -> None:
    """A fresh database: migrated, bench users and rooms inserted in bulk, history rooms filled; tokens minted."""
    args = bench.args
    need_history = "e" in args.scenarios
    sizes = args.history_sizes if need_history else []
    chat = chat_rooms(args)
    if args.database == "postgres":
        import psycopg

        bench.database_url = PG_ADMIN_URL.rpartition("/")[0] + "/" + PG_DATABASE
        reuse = args.keep_db and _seeded_as_wanted(bench.database_url, args.users, sizes, chat)
        if not reuse:
            log(f"creating PostgreSQL database {PG_DATABASE}")
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    else:
        path = WORK / "nexus_bench.db"
        bench.database_url = f"sqlite:///{path}"
        reuse = args.keep_db and path.exists() and _seeded_as_wanted(bench.database_url, args.users, sizes, chat)
        if not reuse:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    Path(str(path) + suffix).unlink()
    if reuse:
        log("--keep-db: the seeded database matches; reusing it")
    else:
        log("nexus db upgrade")
        env = bench.nexus_env()
        done = subprocess.run([str(VENV_BIN / "nexus"), "db", "upgrade"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"nexus db upgrade failed:\n{done.stdout}\n{done.stderr}")
        _seed(bench.database_url, args.users, sizes, chat)
    bench.user_count = args.users
    bench.history_rooms = {f"hist_{n}": n for n in sizes}
    _mint_tokens(bench)


def _engine(url: str):
    from sqlalchemy import create_engine

    from nexus.config import normalize_database_url

    return create_engine(normalize_database_url(url, str(WORK / "instance")))


def chat_rooms(args: argparse.Namespace) -> dict[str, list[int]]:
    """The persisted-chat rooms and the account numbers of their members, as the generator lays them out:
    client c is in room c div (clients/rooms) and uses account c mod users."""
    size = args.chat_clients // args.chat_rooms
    return {
        f"{CHAT_ROOM_PREFIX}{r:02d}": sorted({(r * size + j) % args.users for j in range(size)})
        for r in range(args.chat_rooms)
    }


def _seeded_as_wanted(url: str, users: int, sizes: list[int], chat: dict[str, list[int]]) -> bool:
    from sqlalchemy import text

    try:
        engine = _engine(url)
        with engine.connect() as conn:
            count = conn.execute(text("SELECT count(*) FROM users WHERE username LIKE 'bench%'")).scalar()
            rooms = dict(conn.execute(text("SELECT name, last_seq FROM rooms WHERE name LIKE 'hist_%'")).all())
            members = dict(conn.execute(text(
                "SELECT r.name, count(m.user_id) FROM rooms r LEFT JOIN room_memberships m ON m.room_id = r.id "
                f"WHERE r.name LIKE '{CHAT_ROOM_PREFIX}%' GROUP BY r.name")).all())
        engine.dispose()
    except Exception:  # noqa: BLE001 - no database or no schema: seed it
        return False
    return count == users and all(rooms.get(f"hist_{n}") == n for n in sizes) \
        and members == {name: len(accounts) for name, accounts in chat.items()}


def _seed(url: str, users: int, sizes: list[int], chat: dict[str, list[int]]) -> None:
    """Users, the bench room with every user a member, history rooms, and the persisted-chat rooms with
    their members, with INSERT ... SELECT."""
    from sqlalchemy import text
    from werkzeug.security import generate_password_hash

    engine = _engine(url)
    postgres = engine.dialect.name == "postgresql"
    # One hash for everyone: nobody logs in with a password here, tokens are minted directly.
    password_hash = generate_password_hash(secrets.token_urlsafe(16))
    now_sql = "now()" if postgres else "strftime('%Y-%m-%d %H:%M:%f', 'now')"

    def series(n_param: str) -> tuple[str, str]:
        """(prefix, FROM clause) producing x = 1..n."""
        if postgres:
            return "", f"FROM generate_series(1, :{n_param}) AS g(x)"
        return f"WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < :{n_param}) ", "FROM g"

    started = time.monotonic()
    with engine.begin() as conn:
        prefix, source = series("n")
        conn.execute(text(
            f"{prefix}INSERT INTO users (username, display_name, password_hash, role, status, created_at, updated_at) "
            f"SELECT 'bench' || x, 'Bench ' || x, :hash, 'user', 'offline', {now_sql}, {now_sql} {source}"
        ), {"n": users, "hash": password_hash})
        rooms = {BENCH_ROOM: 0, **{f"hist_{n}": n for n in sizes}, **{name: 0 for name in chat}}
        for name, last_seq in rooms.items():
            conn.execute(text(
                f"INSERT INTO rooms (name, kind, last_seq, created_at) VALUES (:name, 'public', :seq, {now_sql})"
            ), {"name": name, "seq": last_seq})
        room_ids = dict(conn.execute(text("SELECT name, id FROM rooms")).all())
        conn.execute(text(
            f"INSERT INTO room_memberships (room_id, user_id, role, last_read_seq, joined_at) "
            f"SELECT :room, id, 'member', 0, {now_sql} FROM users WHERE username LIKE 'bench%'"
        ), {"room": room_ids[BENCH_ROOM]})
        first_user = conn.execute(text("SELECT min(id) FROM users WHERE username LIKE 'bench%'")).scalar()
        # Account k is the k-th bench user by id, as the tokens file lists them.
        user_ids = list(conn.execute(text("SELECT id FROM users WHERE username LIKE 'bench%' ORDER BY id")).scalars())
        memberships = [{"room": room_ids[name], "user": user_ids[k]} for name, accounts in chat.items() for k in accounts]
        if memberships:
            conn.execute(text(
                f"INSERT INTO room_memberships (room_id, user_id, role, last_read_seq, joined_at) "
                f"VALUES (:room, :user, 'member', 0, {now_sql})"
            ), memberships)
    log(f"{users} users, the {BENCH_ROOM} room and {len(chat)} chat rooms ({len(memberships)} memberships) inserted")
    for n in sizes:
        prefix, source = series("n")
        with engine.begin() as conn:
            conn.execute(text(
                f"{prefix}INSERT INTO messages (room_id, seq, sender_id, type, content, created_at) "
                f"SELECT :room, x, :first + (x % :users), 'text', 'stored message number ' || x, {now_sql} {source}"
            ), {"n": n, "room": room_ids[f"hist_{n}"], "first": first_user, "users": users})
        log(f"hist_{n}: {n} messages inserted ({time.monotonic() - started:.1f}s so far)")
    if postgres and sizes:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    engine.dispose()


def _mint_tokens(bench: Bench) -> None:
    """Access tokens made in-process by the app itself (nexus.services.tokens), valid for a day."""
    from sqlalchemy import select

    from nexus import create_app
    from nexus.config import Config
    from nexus.extensions import db
    from nexus.models import User
    from nexus.services.tokens import issue_access_token

    environ = {k: v for k, v in bench.nexus_env().items() if k.startswith(("NEXUS_", "JWT_", "DATABASE_URL"))}
    environ["LOG_LEVEL"] = "WARNING"
    config = Config.from_env(environ, async_mode="threading", message_queue_url=None, redis_url=None)
    app = create_app(config)
    with app.app_context():
        users = db.session.scalars(select(User).where(User.username.like("bench%")).order_by(User.id)).all()
        tokens = [{"id": str(user.id), "token": issue_access_token(user)} for user in users]
        db.session.remove()
        db.engine.dispose()
    if len(tokens) != bench.user_count:
        raise RuntimeError(f"expected {bench.user_count} bench users, found {len(tokens)}")
    bench.tokens_file.parent.mkdir(parents=True, exist_ok=True)
    bench.tokens_file.write_text(json.dumps({"users": tokens}))
    log(f"{len(tokens)} access tokens written to {bench.tokens_file}")


# -- the generator --------------------------------------------------------------------------


def run_generator(bench: Bench, scenario: str, urls: list[str], options: dict[str, Any],
                  on_phase: Callable[[str, dict[str, Any]], None], timeout: float) -> dict[str, Any]:
    """Run loadgen.js pinned to the generator CPUs; answer each phase after `on_phase` has measured."""
    command = [*bench.taskset(bench.args.generator_cpus), "node", str(LOADGEN), scenario,
               "--url", ",".join(urls), "--tokens", str(bench.tokens_file), "--room", BENCH_ROOM,
               "--barriers", "1", "--timeout-s", str(int(timeout))]
    for key, value in options.items():
        command += ["--" + key, str(value)]
    process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=None, text=True, bufsize=1, start_new_session=True)
    _live.append(process)
    generator_pid = process.pid
    if hasattr(on_phase, "generator_pid"):
        on_phase.generator_pid = generator_pid  # type: ignore[attr-defined]
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout + 30
    result: dict[str, Any] | None = None
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"the generator ({scenario}) did not finish within {timeout + 30:.0f}s") from None
            if line is None:
                break
            line = line.strip()
            if not line.startswith("{"):
                continue
            message = json.loads(line)
            if "phase" in message:
                on_phase(message["phase"], message)
                with contextlib.suppress(BrokenPipeError):
                    process.stdin.write("\n")  # type: ignore[union-attr]
                    process.stdin.flush()  # type: ignore[union-attr]
            elif "result" in message:
                result = message["result"]
    finally:
        stop_process(process, grace=5)
    if result is None:
        raise RuntimeError(f"the generator ({scenario}) gave no result (exit {process.returncode})")
    result.pop("options", None)
    return result


class Measure:
    """The driver's side of the phases: server CPU between measure_start and measure_end (or warm and
    held), RSS when clients are held, and how busy the rest of the machine was meanwhile."""

    def __init__(self, servers: list[Server], settle: float, profile: Callable[[str], None] | None = None):
        self.servers = servers
        self.settle = settle
        self.profile = profile
        self.generator_pid: int | None = None
        self.data: dict[str, Any] = {}
        self._start: tuple[float, float, float, float] | None = None

    def pids(self) -> list[int]:
        return [pid for server in self.servers for pid in server.all_pids()]

    def _open_window(self) -> None:
        generator = cpu_seconds([self.generator_pid]) if self.generator_pid else 0.0
        self._start = (cpu_seconds(self.pids()), generator, machine_busy_seconds(), time.monotonic())

    def _close_window(self) -> None:
        if self._start is None:
            return
        server0, generator0, busy0, t0 = self._start
        server = cpu_seconds(self.pids()) - server0
        generator = (cpu_seconds([self.generator_pid]) if self.generator_pid else 0.0) - generator0
        other = max(0.0, machine_busy_seconds() - busy0 - server - generator)
        wall = time.monotonic() - t0
        self.data.update(
            serverCpuSeconds=round(server, 3),
            wallSeconds=round(wall, 3),
            serverCpuPercent=round(100 * server / wall, 1) if wall else None,
            # CPU used by anything else on the machine meanwhile (other people's processes, Redis,
            # PostgreSQL), in percent of one CPU: a busy machine makes every figure noisier.
            otherCpuPercent=round(100 * other / wall, 1) if wall else None,
        )
        self._start = None

    def __call__(self, phase: str, message: dict[str, Any]) -> None:
        if phase == "measure_start":
            self._open_window()
            if self.profile:
                self.profile("start")
        elif phase == "measure_end":
            if self.profile:
                self.profile("stop")
            self._close_window()
        elif phase == "warm":
            time.sleep(self.settle)
            self.data["rssWarmKiB"] = sum(s.rss_kib() for s in self.servers)
            self.data["warmClients"] = message.get("clients")
            self._open_window()
        elif phase == "held":
            self._close_window()  # the CPU of connecting
            samples = []
            for _ in range(3):
                time.sleep(self.settle)
                samples.append(sum(s.rss_kib() for s in self.servers))
            self.data["rssHeldKiB"] = samples[-1]
            self.data["rssHeldSamplesKiB"] = samples
            self.data["heldClients"] = message.get("clients")


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent not idle since boot (/proc/stat)."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    busy = sum(values[:8]) - values[3] - values[4]  # user..steal, less idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


# -- scenarios ------------------------------------------------------------------------------


class Profiler:
    """py-spy record on the Nexus worker between measure_start and measure_end."""

    def __init__(self, bench: Bench, scenario: str, server: Server):
        self.bench, self.scenario, self.server = bench, scenario, server
        self.process: subprocess.Popen | None = None
        extension = "speedscope.json" if bench.args.profile_format == "speedscope" else "svg"
        self.path = RESULTS / "profiles" / f"nexus-{scenario}-{bench.stamp}.{extension}"

    def __call__(self, action: str) -> None:
        if action == "start":
            spy = shutil.which("py-spy") or str(VENV_BIN / "py-spy")
            if not Path(spy).exists():
                raise RuntimeError("--profile needs py-spy: .venv/bin/pip install -e '.[bench]'")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            pid = self.server.worker_pids()[0]
            self.process = subprocess.Popen(
                [*self.bench.taskset(self.bench.args.generator_cpus), spy, "record", "--pid", str(pid),
                 "--output", str(self.path), "--format", self.bench.args.profile_format, "--rate", "200",
                 "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
            _live.append(self.process)
            time.sleep(0.5)
        elif action == "stop" and self.process is not None:
            self.process.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                stop_process(self.process)
            if self.process in _live:
                _live.remove(self.process)
            log(f"profile written to {self.path.relative_to(ROOT)}" if self.path.exists()
                else f"py-spy wrote no profile: {self.process.stderr.read().decode()[-500:]}")  # type: ignore[union-attr]


def run_one(bench: Bench, key: str, target: str, scenario: str, options: dict[str, Any], *,
            instances: int = 1, timeout: float = 120, settle: float | None = None,
            persist: bool = False) -> dict[str, Any]:
    """Start fresh server(s), run one generator scenario against them, stop them; the raw figures.
    With `persist`, the Node reference stores each message in a PostgreSQL database of its own."""
    servers: list[Server] = []
    redis_prefix = None
    node_database = None
    result: dict[str, Any] | None = None
    begun = time.monotonic()
    try:
        if instances > 1:
            redis_prefix = f"bench-{os.getpid()}-{secrets.token_hex(3)}"
        if persist and target == "node":
            node_database = create_node_database()
        for i in range(instances):
            name = f"{key}-{i}" if instances > 1 else key
            if target == "node":
                servers.append(bench.start_node(name, redis_key=redis_prefix, pg_url=node_database))
            elif target == "flask":
                servers.append(bench.start_flask(name, channel=redis_prefix))
            elif target == "asgi":
                servers.append(bench.start_asgi(name, channel=redis_prefix))
            else:
                extra = {"MESSAGE_QUEUE_URL": REDIS_URL, "REDIS_URL": REDIS_URL,
                         "SOCKETIO_REDIS_PREFIX": redis_prefix} if redis_prefix else None
                servers.append(bench.start_nexus(name, extra_env=extra))
        profile = None
        if target == "nexus" and bench.args.profile and key.split(".")[0] == bench.args.profile:
            profile = Profiler(bench, key, servers[0])
        measure = Measure(servers, bench.args.settle if settle is None else settle, profile)
        started = time.monotonic()
        log(f"{key} on {target} (started in {started - begun:.1f}s): {scenario} "
            f"{' '.join(f'{k}={v}' for k, v in options.items())}")
        result = run_generator(bench, scenario, [s.url for s in servers], options, measure, timeout)
        result["server"] = measure.data
        result["server"]["pids"] = [s.all_pids() for s in servers]
        result["server"]["rssFinalKiB"] = sum(s.rss_kib() for s in servers)
        result["elapsedSeconds"] = round(time.monotonic() - started, 1)
        if instances > 1:
            result["instances"] = instances
        return result
    finally:
        problems = []
        stopping = time.monotonic()
        for server in servers:
            # A server still busy with thousands of disconnects answers SIGTERM late. The peers' own
            # graceful shutdown (5 s) is not what is measured: they get less time before SIGKILL.
            stop_process(server.process, grace=15 if server.target == "nexus" else 8)
            problems.append(log_problems(server.log_path))
        if servers and time.monotonic() - stopping > 2:
            log(f"{key} on {target}: the server(s) took {time.monotonic() - stopping:.1f}s to stop")
        if servers:
            merged = {k: sum(p[k] for p in problems) for k in ("warning", "error", "traceback")}
            merged["samples"] = [s for p in problems for s in p["samples"]][:5]
            merged["logs"] = [str(s.log_path) for s in servers]
            if merged["error"] or merged["traceback"]:
                log(f"{target} logged {merged['error']} error line(s) ({merged['traceback']} with a traceback): "
                    f"{merged['samples'][:2]}")
            if result is not None:
                result.setdefault("server", {})["logProblems"] = merged
        if redis_prefix and target == "nexus":
            _clean_redis(redis_prefix)
        if node_database:
            drop_node_database(node_database)


def create_node_database() -> str:
    """A fresh PostgreSQL database for the Node reference's messages (it creates its tables on start);
    named after this run's pid, so that two runs never share it."""
    import psycopg

    name = f"{PG_NODE_DATABASE}_{os.getpid()}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN_URL.rpartition("/")[0] + "/" + name


def drop_node_database(url: str) -> None:
    import psycopg

    name = url.rpartition("/")[2]
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception as exc:  # noqa: BLE001 - the figures stand; say what was left behind
        log(f"could not drop the database {name}: {exc}")


def _clean_redis(prefix: str) -> None:
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}*", count=1000):
            client.delete(key)


def derive(result: dict[str, Any]) -> dict[str, Any]:
    """Figures computed from a run: memory per connection, CPU per delivery."""
    server = result.get("server", {})
    if "rssHeldKiB" in server and result.get("connected"):
        result["memoryPerConnectionKiB"] = round((server["rssHeldKiB"] - server["rssWarmKiB"]) / result["connected"], 2)
    if "connectSeconds" in result or "reconnectSeconds" in result:
        result["connectErrors"] = sum(result.get("errors", {}).get("connect", {}).values()) + \
            result.get("errors", {}).get("notWebsocket", 0)
    if server.get("serverCpuSeconds") is not None and result.get("connectSeconds") is not None and result.get("connected"):
        result["serverCpuMsPerConnection"] = round(1e3 * server["serverCpuSeconds"] / result["connected"], 3)
    if server.get("serverCpuSeconds") is not None and result.get("deliveries"):
        result["serverCpuUsPerDelivery"] = round(1e6 * server["serverCpuSeconds"] / result["deliveries"], 2)
    if server.get("serverCpuSeconds") is not None and result.get("roundTrips"):
        result["serverCpuUsPerRoundTrip"] = round(1e6 * server["serverCpuSeconds"] / result["roundTrips"], 2)
    if server.get("serverCpuSeconds") is not None and result.get("scenario") == "chat" and result.get("acked"):
        result["serverCpuUsPerMessage"] = round(1e6 * server["serverCpuSeconds"] / result["acked"], 1)
    if server.get("serverCpuSeconds") is not None and result.get("reconnected"):
        result["serverCpuMsPerReconnect"] = round(1e3 * server["serverCpuSeconds"] / result["reconnected"], 3)
    return result


def scenario_plan(bench: Bench) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(key, generator scenario, generator options, run options) for the chosen scenarios."""
    args = bench.args
    d = args.duration
    half = max(1.0, d / 2)
    plan: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = []
    for s in args.scenarios:
        if s == "a":
            plan.append(("a", "connect", {"clients": args.clients, "warm": 10 if not args.quick else 2},
                         {"timeout": 60 + args.clients / 50}))
        elif s == "a10k":
            # The warm-up clients count: the target is this many connections open at once.
            warm = 10 if not args.quick else 2
            plan.append(("a10k", "connect", {"clients": args.clients_10k - warm, "warm": warm},
                         {"timeout": 120 + args.clients_10k / 40}))
        elif s == "b":
            plan.append(("b", "fanout", {"receivers": args.receivers, "duration-s": d, "window": args.window},
                         {"timeout": 90 + d + args.receivers / 50, "settle": 0}))
        elif s == "c":
            # 5 s at 5 msg/s to 1,000 receivers: 25,000 latencies, plenty for a p99.
            plan.append(("c", "rate", {"receivers": args.receivers, "duration-s": half, "rate": args.rate},
                         {"timeout": 90 + d + args.receivers / 50, "settle": 0}))
        elif s == "d":
            plan.append(("d", "rtt", {"clients": args.rtt_clients, "duration-s": half},
                         {"timeout": 60 + d, "settle": 0}))
        elif s == "e":
            for receivers in args.cost_receivers:
                plan.append((f"e.fanout{receivers}", "fanout",
                             {"receivers": receivers, "duration-s": half, "window": args.window},
                             {"timeout": 90 + d + receivers / 30, "settle": 0}))
            rooms = ",".join(f"{name}:{n}" for name, n in bench.history_rooms.items())
            plan.append(("e.history", "history",
                         {"rooms": rooms, "iterations": 200 if not args.quick else 20, "duration-s": 5},
                         {"timeout": 120, "settle": 0}))
        elif s == "f":
            plan.append(("f", "fanout", {"receivers": args.receivers, "duration-s": half, "window": args.window},
                         {"timeout": 90 + d + args.receivers / 50, "settle": 0, "instances": 2}))
        elif s == "g":
            plan.append(("g", "chat", {"clients": args.chat_clients, "chat-rooms": args.chat_rooms,
                                       "senders": args.chat_senders, "room-prefix": CHAT_ROOM_PREFIX,
                                       "duration-s": d},
                         {"timeout": 90 + d + args.chat_clients / 20, "settle": 0, "persist": True}))
        elif s == "h":
            plan.append(("h", "storm", {"clients": args.storm_clients, "storm-concurrency": args.storm_concurrency,
                                        "control-interval-ms": CONTROL_INTERVAL_MS},
                         {"timeout": 120 + args.storm_clients / 20, "settle": 0}))
    return plan


def takes_part(target: str, key: str) -> bool:
    """Whether a server runs a scenario (a peer without a database has no persisted chat, say)."""
    return not any(key == skip or key.split(".")[0] == skip for skip in NOT_FOR.get(target, ()))


def redis_available() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        return f"{REDIS_URL}: {exc}"
    return None


# -- the table ------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def get(runs: dict[str, Any], key: str, target: str, *path: str) -> Any:
    value: Any = runs.get(key, {}).get(target)
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


ORDER = ("nexus", "node", "flask", "asgi")  # the table's columns
PYTHON_PEERS = ("flask", "asgi")


def ratio_of(nexus: Any, other: Any) -> float | None:
    if isinstance(nexus, (int, float)) and isinstance(other, (int, float)) and other \
            and not isinstance(nexus, bool) and not isinstance(other, bool):
        return round(nexus / other, 3)
    return None


def build_table(runs: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Rows: scenario, metric, each server's figure, Nexus's ratio to each other server, which way is
    better, Nexus's target (against Node, or absolute) and whether it is met, and whether Nexus is at
    least as good as both Python peers."""
    rows: list[dict[str, Any]] = []

    def add(scenario: str, key: str, metric: str, values: dict[str, Any], better: str, *, target_text: str = "",
            met: bool | None = None, compare: bool = True) -> None:
        ratios = {t: ratio_of(values.get("nexus"), values.get(t)) for t in PEER_TARGETS} if compare else \
            {t: None for t in PEER_TARGETS}
        ahead = None
        if compare and better in ("higher", "lower") and isinstance(values.get("nexus"), (int, float)):
            peers = [values[t] for t in PYTHON_PEERS if isinstance(values.get(t), (int, float))]
            if peers:
                nexus = values["nexus"]
                ahead = all(nexus >= v if better == "higher" else nexus <= v for v in peers)
        gen = {t: get(runs, key, t, "genCpuPercent") for t in ORDER}
        rows.append({
            "scenario": scenario, "metric": metric, "values": values,
            "absent": [t for t in ORDER if not takes_part(t, key)],
            "nexus": values.get("nexus"), "node": values.get("node"), "ratio": ratios["node"], "ratios": ratios,
            "better": better, "target": target_text, "met": met, "aheadOfPeers": ahead,
            "genCpu": gen, "genCpuNexus": gen["nexus"], "genCpuNode": gen["node"],
        })

    def row(scenario: str, key: str, metric: str, path: tuple[str, ...], better: str,
            target: float | None = None, *, absolute_met: Any = None, target_text: str = "") -> None:
        values = {t: get(runs, key, t, *path) for t in ORDER}
        if all(v is None for v in values.values()):
            return
        ratio = ratio_of(values["nexus"], values["node"])
        met = absolute_met
        if target is not None and ratio is not None:
            met = ratio >= target if better == "higher" else ratio <= target
        if not target_text and target is not None:
            target_text = f"{'≥' if better == 'higher' else '≤'}{target:g}×"
        add(scenario, key, metric, values, better, target_text=target_text, met=met)

    n = args.clients
    row("a", "a", f"time to connect {n:,} clients (s)", ("connectSeconds",), "lower")
    row("a", "a", "memory per idle connection (KiB)", ("memoryPerConnectionKiB",), "lower", 1.0)
    row("a", "a", "server CPU per connection (ms)", ("serverCpuMsPerConnection",), "lower", 2.0)
    row("a", "a", "clients held", ("stillConnected",), "higher")
    n10 = args.clients_10k
    held = get(runs, "a10k", "nexus", "concurrent")
    errors10 = get(runs, "a10k", "nexus", "errors")
    ok10 = None
    if held is not None:
        ok10 = held == n10 and not any((errors10 or {}).get(k) for k in ("connect", "disconnect")) \
            and not (errors10 or {}).get("notWebsocket")
    row("a10k", "a10k", f"connections held at once, of {n10:,}", ("concurrent",), "higher",
        absolute_met=ok10, target_text=f"all {n10:,}")
    requested = next((r for t in ORDER if (r := get(runs, "a10k", t, "requested"))), n10)
    row("a10k", "a10k", f"time to connect {requested:,} clients after the warm-up (s)", ("connectSeconds",),
        "lower", 2.0)
    row("a10k", "a10k", "connect errors", ("connectErrors",), "lower")
    row("a10k", "a10k", "memory per idle connection (KiB)", ("memoryPerConnectionKiB",), "lower", 1.0)
    row("a10k", "a10k", "server CPU per connection (ms)", ("serverCpuMsPerConnection",), "lower")

    def fanout_rows(label: str, key: str, target: float | None) -> None:
        row(label, key, "fan-out deliveries/s", ("deliveriesPerSecond",), "higher", target)
        row(label, key, "delivery latency p50 (ms)", ("latencyMs", "p50"), "lower")
        row(label, key, "delivery latency p99 (ms)", ("latencyMs", "p99"), "lower")
        row(label, key, "messages sent (acked)", ("acked",), "higher")
        row(label, key, "deliveries lost", ("lost",), "lower")
        row(label, key, "server CPU µs per delivery", ("serverCpuUsPerDelivery",), "lower")

    fanout_rows("b", "b", 1.0)
    row("c", "c", f"latency p50 at {args.rate:g} msg/s (ms)", ("latencyMs", "p50"), "lower")
    row("c", "c", f"latency p99 at {args.rate:g} msg/s (ms)", ("latencyMs", "p99"), "lower", 1.0)
    row("c", "c", f"latency max at {args.rate:g} msg/s (ms)", ("latencyMs", "max"), "lower")
    row("d", "d", "round trips/s", ("roundTripsPerSecond",), "higher", 0.5)
    row("d", "d", "round trip p50 (ms)", ("latencyMs", "p50"), "lower")
    row("d", "d", "round trip p99 (ms)", ("latencyMs", "p99"), "lower")
    costs: dict[str, dict[int, float]] = {t: {} for t in ORDER}
    for receivers in args.cost_receivers:
        key = f"e.fanout{receivers}"
        row("e", key, f"CPU µs/delivery, {receivers:,} receivers", ("serverCpuUsPerDelivery",), "lower")
        row("e", key, f"deliveries/s, {receivers:,} receivers", ("deliveriesPerSecond",), "higher")
        for target in ORDER:
            value = get(runs, key, target, "serverCpuUsPerDelivery")
            if value:
                costs[target][receivers] = value
    if len(costs["nexus"]) >= 2:
        low, high = min(costs["nexus"]), max(costs["nexus"])
        growth = {t: round(costs[t][high] / costs[t][low], 3) if low in costs[t] and high in costs[t] else None
                  for t in ORDER}
        add("e", "e.fanout", f"cost growth {low:,}→{high:,} receivers (×)", growth, "lower",
            target_text=f"flat (≤{FLAT_COST:g})", met=None if growth["nexus"] is None else growth["nexus"] <= FLAT_COST,
            compare=False)
    history = get(runs, "e.history", "nexus", "rooms") or {}
    for page in ("latest", "middle"):
        p50s = {}
        for data in history.values():
            stored = data.get("storedMessages")
            p50s[stored] = data.get(page, {}).get("p50")
            add("e", "e.history", f"get_history {page} page p50, {stored:,} stored (ms)", {"nexus": p50s[stored]},
                "lower", compare=False)
            add("e", "e.history", f"get_history {page} page p99, {stored:,} stored (ms)",
                {"nexus": data.get(page, {}).get("p99")}, "lower", compare=False)
        values = [v for v in p50s.values() if v]
        if len(values) >= 2:
            spread = round(p50s[max(p50s)] / p50s[min(p50s)], 3) if p50s[min(p50s)] else None
            add("e", "e.history", f"history growth {min(p50s):,}→{max(p50s):,}, {page} p50 (×)", {"nexus": spread},
                "lower", target_text=f"flat (≤{FLAT_HISTORY:g})", met=None if spread is None else spread <= FLAT_HISTORY,
                compare=False)
    fanout_rows("f", "f", None)

    row("g", "g", "acked messages/s", ("messagesPerSecond",), "higher", 1.0)
    row("g", "g", "ack latency p50 (ms)", ("ackLatencyMs", "p50"), "lower")
    row("g", "g", "ack latency p99 (ms)", ("ackLatencyMs", "p99"), "lower", 1.0)
    row("g", "g", "deliveries/s", ("deliveriesPerSecond",), "higher")
    row("g", "g", "delivery latency p99 (ms)", ("latencyMs", "p99"), "lower")
    row("g", "g", "deliveries lost", ("lost",), "lower")
    row("g", "g", "server CPU µs per message", ("serverCpuUsPerMessage",), "lower")

    storm = args.storm_clients

    def all_back(target: str) -> bool | None:
        back = get(runs, "h", target, "reconnected")
        if back is None:
            return None
        return back == get(runs, "h", target, "connectedBefore") == storm and not get(runs, "h", target, "connectErrors")

    row("h", "h", f"time until all {storm:,} are back (s)", ("reconnectSeconds",), "lower", 2.0)
    if rows and rows[-1]["scenario"] == "h" and rows[-1]["met"] and not all_back("nexus"):
        rows[-1]["met"] = False  # the last one back is not "all back" when some never were
    row("h", "h", "clients back", ("reconnected",), "higher", absolute_met=all_back("nexus"),
        target_text=f"all {storm:,}")
    row("h", "h", "connect errors (before and during the storm)", ("connectErrors",), "lower")
    row("h", "h", "reconnect time p50 (ms)", ("reconnectMs", "p50"), "lower")
    p99 = get(runs, "h", "nexus", "controlPingMs", "p99")
    stayed = get(runs, "h", "nexus", "controlStayedConnected")
    row("h", "h", "control ping p99 during the storm (ms)", ("controlPingMs", "p99"), "lower",
        absolute_met=None if p99 is None else (p99 <= CONTROL_P99_MS and bool(stayed)
                                               and not get(runs, "h", "nexus", "controlUnanswered")),
        target_text=f"≤{CONTROL_P99_MS:g} ms")
    row("h", "h", "control ping max during the storm (ms)", ("controlPingMs", "max"), "lower")
    row("h", "h", "server CPU per reconnect (ms)", ("serverCpuMsPerReconnect",), "lower")
    return rows


def print_table(rows: list[dict[str, Any]]) -> str:
    shown = [t for t in ORDER if any(r["values"].get(t) is not None for r in rows)] or ["nexus", "node"]
    others = [t for t in shown if t != "nexus"]
    headers = ["scenario", "metric", *(NAMES[t] for t in shown), *(f"Nexus/{NAMES[t]}" for t in others),
               "better", "target", "met", "≥ peers", "gen CPU % (same order)"]
    body = []
    for r in rows:
        cells = [r["scenario"], r["metric"]]
        cells += ["—" if t in r["absent"] and r["values"].get(t) is None else fmt(r["values"].get(t)) for t in shown]
        cells += ["-" if r["ratios"].get(t) is None else f"{r['ratios'][t]:.3g}×" for t in others]
        gens = [r["genCpu"].get(t) for t in shown]
        gen = "-" if all(g is None for g in gens) else "/".join(fmt(g) for g in gens)
        met = "" if r["met"] is None else ("yes" if r["met"] else "NO")
        ahead = "" if r["aheadOfPeers"] is None else ("yes" if r["aheadOfPeers"] else "no")
        body.append([*cells, r["better"], r["target"], met, ahead, gen])
    widths = [max(len(h), *(len(line[i]) for line in body)) if body else len(h) for i, h in enumerate(headers)]
    numeric = set(range(2, 2 + len(shown) + len(others)))
    lines = []
    for line in [headers, ["-" * w for w in widths], *body]:
        cells = [cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(line)]
        lines.append("  ".join(cells).rstrip())
    text = "\n".join(lines)
    print(text, flush=True)
    return text


# -- machine and run metadata ---------------------------------------------------------------


def command_output(command: list[str]) -> str | None:
    with contextlib.suppress(Exception):
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=20).stdout.strip() or None
    return None


def machine_info(args: argparse.Namespace, nofile: tuple[int, int]) -> dict[str, Any]:
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_kib = None
    with contextlib.suppress(OSError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    socketio_version = None
    with contextlib.suppress(OSError, ValueError):
        socketio_version = json.loads((ROOT / "node_modules/socket.io/package.json").read_text())["version"]
    client_version = None
    with contextlib.suppress(OSError, ValueError):
        client_version = json.loads((ROOT / "node_modules/socket.io-client/package.json").read_text())["version"]
    pg_version = None
    with contextlib.suppress(OSError, ValueError):
        pg_version = json.loads((ROOT / "node_modules/pg/package.json").read_text())["version"]
    from importlib import metadata

    python_packages = {}
    for package in ("Flask-SocketIO", "python-socketio", "python-engineio", "gevent", "gevent-websocket",
                    "gunicorn", "uvicorn", "websockets"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            python_packages[package] = metadata.version(package)
    dirty = command_output(["git", "status", "--porcelain", "--", "nexus", "wsgi.py", "Procfile"])
    return {
        "nproc": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "cpuModel": cpu_model,
        "memTotalKiB": mem_kib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": command_output(["node", "--version"]),
        "socketio": socketio_version,
        "socketioClient": client_version,
        "nodePg": pg_version,
        "pythonPackages": python_packages,
        "gitCommit": command_output(["git", "rev-parse", "HEAD"]),
        "gitDirtyServerFiles": dirty.splitlines() if dirty else [],
        "rlimitNofile": list(nofile),
        "pinning": {
            "server": " ".join(["taskset", "-c", args.server_cpus]) if shutil.which("taskset") else "none",
            "generator": " ".join(["taskset", "-c", args.generator_cpus]) if shutil.which("taskset") else "none",
        },
    }


def carry_over(runs: dict[str, Any], args: argparse.Namespace, wanted: list[str]) -> dict[str, Any]:
    """Figures of targets not run now, taken from the last JSON (marked with where they came from)."""
    missing = [t for t in TARGETS if t not in args.targets]
    if not missing or not args.output.exists():
        return {}
    with contextlib.suppress(Exception):
        previous = json.loads(args.output.read_text())
        notes = {}
        same = previous.get("parameters", {}) == parameters(args)
        for key in wanted:
            for target in missing:
                old = previous.get("runs", {}).get(key, {}).get(target)
                if old is not None:
                    runs.setdefault(key, {})[target] = {**old, "carriedFrom": previous["meta"]["timestamp"]}
        notes = {t: {"from": previous["meta"]["timestamp"], "sameParameters": same} for t in missing}
        if not same:
            log("note: the carried-over figures were measured with other parameters")
        return notes
    return {}


# -- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.work_dir is not None:
        global WORK
        WORK = args.work_dir.resolve()
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    nofile = raise_nofile()
    # Each process (a server, the generator) holds one descriptor per client, plus a few hundred.
    if nofile[0] < max(args.clients, args.clients_10k if "a10k" in args.scenarios else 0,
                       2 * args.storm_clients if "h" in args.scenarios else 0) + 1000:
        log(f"warning: RLIMIT_NOFILE is {nofile[0]}; large scenarios may run out of file descriptors")
    for tool in ("node",):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} is not on PATH")
    if not (ROOT / "node_modules" / "socket.io").is_dir():
        raise SystemExit("bench: node_modules/socket.io is missing: run `npm ci`")
    if "g" in args.scenarios and "node" in args.targets and not (ROOT / "node_modules" / "pg").is_dir():
        raise SystemExit("bench: node_modules/pg is missing (the reference's store in scenario g): run `npm ci`")
    import importlib.util

    for target, module in (("asgi", "uvicorn"), ("asgi", "websockets"), ("g", "psycopg")):
        wanted = target in args.scenarios and "node" in args.targets if target == "g" else target in args.targets
        if wanted and importlib.util.find_spec(module) is None:
            raise SystemExit(f"bench: the Python package {module} is missing: .venv/bin/pip install -e '.[bench]'")
    if os.cpu_count() and os.cpu_count() < 2:
        log("warning: one CPU: the server and the generator share it")
    WORK.mkdir(parents=True, exist_ok=True)
    locks = [hold_lock(WORK / "run.lock", f"the work folder {WORK}")]
    if "nexus" in args.targets and args.database == "postgres":
        locks.append(hold_lock(Path("/tmp") / f"nexus-bench-{PG_DATABASE}.lock", f"the database {PG_DATABASE}"))
    (WORK / "logs").mkdir(exist_ok=True)
    for old in (WORK / "logs").glob("*.log"):
        old.unlink()

    bench = Bench(args)
    if "nexus" in args.targets:
        prepare_database(bench)
    else:
        # Node needs no accounts; the generator still sends a token of the same size.
        bench.user_count = args.users
        bench.tokens_file.parent.mkdir(parents=True, exist_ok=True)
        bench.tokens_file.write_text(json.dumps({"users": [{"id": str(i + 1), "token": "x" * 300} for i in range(args.users)]}))
        bench.history_rooms = {f"hist_{n}": n for n in args.history_sizes} if "e" in args.scenarios else {}

    plan = scenario_plan(bench)
    runs: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    redis_problem = redis_available() if "f" in args.scenarios else None
    for key, scenario, options, settings in plan:
        settings = dict(settings)
        instances = settings.pop("instances", 1)
        if instances > 1 and redis_problem:
            skipped[key] = f"Redis is not available: {redis_problem}"
            log(f"skipping {key}: {skipped[key]}")
            continue
        for target in args.targets:
            if not takes_part(target, key):
                continue
            try:
                runs.setdefault(key, {})[target] = derive(
                    run_one(bench, key, target, scenario, options, instances=instances, **settings))
            except Exception as exc:  # one failed scenario is reported, the others still run
                log(f"{key} on {target} failed: {exc}")
                runs.setdefault(key, {})[target] = {"failure": str(exc)}
    carried = carry_over(runs, args, [key for key, *_ in plan])

    rows = build_table(runs, args)
    print()
    text = print_table(rows)
    busy = [f"{key}/{target} {result['server']['otherCpuPercent']:g}%"
            for key, per in runs.items() for target, result in per.items()
            if "carriedFrom" not in result and (result.get("server") or {}).get("otherCpuPercent", 0) > 15]
    if busy:
        note = ("note: other processes used CPU during these measurements (percent of one CPU), "
                "so their figures are noisier: " + ", ".join(busy))
        print(note, flush=True)
        text += "\n" + note
    elapsed = round(time.monotonic() - started, 1)
    document = {
        "meta": {
            "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "label": args.label,
            "command": " ".join([Path(sys.executable).name, "bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
            "elapsedSeconds": elapsed,
            "targets": args.targets,
            "scenarios": args.scenarios,
            "carriedOver": carried,
            "skipped": skipped,
            "profile": args.profile,
            **machine_info(args, nofile),
        },
        "parameters": parameters(args),
        "runs": runs,
        "table": rows,
        "tableText": text,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=1) + "\n")
    if not args.quick and args.output == RESULTS / "latest.json":
        copy = RESULTS / "runs" / f"{bench.stamp}.json"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.output, copy)
    log(f"done in {elapsed:.0f}s; JSON in {args.output}")
    failures = [f"{k}/{t}" for k, per in runs.items() for t, r in per.items() if "failure" in r]
    if failures:
        log(f"failed runs: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
