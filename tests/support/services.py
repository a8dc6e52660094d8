"""The machine's services (PostgreSQL, Redis, RabbitMQ, Node): use them, or skip with the reason.

In CI (CI=true or NEXUS_REQUIRE_SERVICES=1) a missing service fails the test instead.
"""
from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import uuid
from functools import cache
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("NEXUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("NEXUS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def services_required() -> bool:
    return os.environ.get("NEXUS_REQUIRE_SERVICES") == "1" or os.environ.get("CI", "").lower() == "true"


def require(name: str) -> None:
    """Skip (or in CI, fail) unless the named service answers."""
    problem = _problem(name)
    if problem is None:
        return
    message = f"{name} is not available here: {problem}"
    if services_required():
        pytest.fail(message + " (CI requires every service)")
    pytest.skip(message)


@cache
def _problem(name: str) -> str | None:
    if name == "redis":
        try:
            import redis

            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        except Exception as exc:  # noqa: BLE001 - any failure means "not available"
            return f"{REDIS_URL}: {exc}"
        return None
    if name == "rabbitmq":
        try:
            import kombu

            with kombu.Connection(AMQP_URL, connect_timeout=3) as connection:
                connection.connect()
        except Exception as exc:  # noqa: BLE001
            return f"{AMQP_URL}: {exc}"
        return None
    if name == "postgres":
        url = postgres_admin_url()
        try:
            import psycopg

            psycopg.connect(url, connect_timeout=3).close()
        except Exception as exc:  # noqa: BLE001
            return f"{url}: {exc}"
        return None
    if name == "nginx":
        if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
            return "nginx is not installed (apt-get install nginx-light; .ci/run installs it)"
        return None
    if name == "node":
        if shutil.which("node") is None:
            return "node is not on PATH"
        if not (ROOT / "node_modules" / "socket.io-client").is_dir():
            return "node_modules/socket.io-client is missing: run `npm ci`"
        return None
    if name == "swagger-ui":  # what /api/docs serves
        if not (ROOT / "node_modules" / "swagger-ui-dist" / "swagger-ui-bundle.js").is_file():
            return "node_modules/swagger-ui-dist is missing: run `npm ci`"
        return None
    raise ValueError(name)


def database_url() -> str | None:
    """DATABASE_URL when the suite is run against PostgreSQL."""
    url = os.environ.get("DATABASE_URL")
    return url if url and url.startswith(("postgres://", "postgresql")) else None


def postgres_admin_url() -> str:
    """A URL for creating and dropping test databases (the server of DATABASE_URL, or the local one)."""
    url = database_url() or os.environ.get("NEXUS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    url = url.replace("postgresql+psycopg://", "postgresql://").replace("postgres://", "postgresql://", 1)
    base, _, _ = url.rpartition("/")
    return base + "/postgres"


def unit_database_url(tmp_path: Path) -> str:
    """The database of in-process tests: DATABASE_URL's PostgreSQL (one database of its own per
    pytest-xdist worker, as the tests create and drop their tables), or a SQLite file."""
    url = database_url()
    if url:
        require("postgres")
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        return _worker_database(url, worker) if worker else url
    return f"sqlite:///{tmp_path / 'unit.db'}"


_WORKER_DATABASES: dict[str, str] = {}


def _worker_database(url: str, worker: str) -> str:
    """DATABASE_URL's server, a database named after it and the worker, made empty once per run."""
    if worker not in _WORKER_DATABASES:
        import psycopg

        base, _, name = url.rpartition("/")
        name = f"{name.split('?')[0]}_{worker}"
        with psycopg.connect(postgres_admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        _WORKER_DATABASES[worker] = f"{base}/{name}"
    return _WORKER_DATABASES[worker]


#: Ports handed out by free_port in this process (never twice).
_HANDED_OUT: set[int] = set()
#: Lowest port free_port draws from.
_LOWEST_PORT = 10_000
#: Ports the machine's own services take when they (re)start, even if free now: RabbitMQ's
#: distribution and management, epmd, NATS's cluster and monitoring, MQTT.
_SERVICE_PORTS = frozenset({25672, 15672, 15692, 4369, 6222, 8222, 1883, 8883, 9001, 61613})


def _ephemeral_low() -> int:
    """The lowest port of the kernel's ephemeral range (where outgoing connections take theirs)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port nothing listens on, for a server a test starts.

    Drawn from below the kernel's ephemeral range: a port the kernel picks as free (bind to 0)
    comes from that range, where any outgoing connection may take it before the server binds it
    (a busy suite saw its Redis fail with "Address already in use"). Each pytest-xdist worker
    draws from a range of its own, and no port is handed out twice by one process."""
    low, high = _LOWEST_PORT, _ephemeral_low() - 1
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker[2:].isascii() and worker[2:].isdigit() else 0
    if high - low >= 1000 * count:
        width = (high - low) // count
        low, high = low + index * width, low + (index + 1) * width - 1
        for _ in range(500):
            port = random.randint(low, high)
            if port in _HANDED_OUT or port in _SERVICE_PORTS:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _HANDED_OUT.add(port)
            return port
    with socket.socket() as sock:  # no room below the ephemeral range: the kernel's pick
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def redis_channel() -> Iterator[str]:
    """A fresh SOCKETIO_REDIS_PREFIX on the local Redis (skip, or fail in CI, without one); every key
    under it is deleted afterwards, so tests never see each other's state."""
    require("redis")
    channel = f"nexus-test-{uuid.uuid4().hex}"
    try:
        yield channel
    finally:
        import redis

        connection = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(connection.scan_iter(match=f"{channel}*", count=500))
            if keys:
                connection.delete(*keys)
        finally:
            connection.close()
