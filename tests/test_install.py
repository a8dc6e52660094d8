"""Installs as users make them, each into a fresh virtual environment, from a copy of the repository:

- `pip install <repo>` (no extras, not editable), then `nexus serve` from another folder on SQLite:
  migrations, the dashboard's templates and static files, and the README's `nexus client`; a
  PostgreSQL or Redis URL without its client package stops at start naming the extra;
- `pip install -r requirements.txt` (what Heroku's Python buildpack runs), then the Procfile's
  `release` and `web` lines on PostgreSQL and Redis, and a WebSocket connection.

Slow (each builds an environment): `.ci/run` runs them once, in the SQLite pass.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import requests

from tests.support import services
from tests.support.live import LiveServer, procfile_command

pytestmark = [pytest.mark.live, pytest.mark.timeout(420)]

SECRET = "install-test-secret-" + "k" * 40
# Not what the repository's users deploy: local state, caches and build output (.gitignore).
NOT_DEPLOYED = (".git", ".venv", ".venv-*", "node_modules", "instance", "build", "dist", "*.egg-info",
                "__pycache__", ".pytest_cache", "test-artifacts", "results")


def fresh_copy(tmp_path: Path) -> Path:
    """The repository as a user clones it, so that building it leaves the working tree alone."""
    copy = tmp_path / "nexus-src"
    shutil.copytree(services.ROOT, copy, ignore=shutil.ignore_patterns(*NOT_DEPLOYED))
    return copy


def fresh_venv(tmp_path: Path, *pip_args: str, cwd: Path) -> Path:
    """A new virtual environment with `pip install <pip_args>` run in `cwd`; returns its bin folder."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *pip_args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return venv / "bin"


def clean_env(bin_dir: Path, **extra: str) -> dict[str, str]:
    """Only what a user's shell would give the server, with the new environment's bin first on PATH."""
    home = os.environ.get("HOME", "/root")
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": home, "PYTHONUNBUFFERED": "1", **extra}


@contextlib.contextmanager
def started(command: list[str], *, cwd: Path, env: dict[str, str], port: int, log_path: Path) -> Iterator[LiveServer]:
    """A server process started like a user starts it (from `cwd`, with only `env`), its output in a file."""
    process = LiveServer(command, env, port, log_path, cwd=cwd)
    try:
        process.wait_ready(timeout=60)
        yield process
    finally:
        process.stop(timeout=20)


def test_a_plain_install_serves_the_dashboard_migrates_and_runs_the_client_from_any_folder(tmp_path):
    bin_dir = fresh_venv(tmp_path, str(fresh_copy(tmp_path)), cwd=tmp_path)
    for package in ("psycopg", "redis"):  # the base install leaves the optional clients out
        probe = subprocess.run([str(bin_dir / "python"), "-c", f"import {package}"], capture_output=True, timeout=60)
        assert probe.returncode != 0, f"{package} came with the base install"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    # A URL whose client package is missing stops the server at start with the extra to install.
    for variable, url, message in [
        ("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test",
         "DATABASE_URL: points at PostgreSQL but the psycopg package is not installed; "
         "install Nexus with its postgres extra: pip install -e '.[postgres]'"),
        ("MESSAGE_QUEUE_URL", "redis://127.0.0.1:6379/0",
         "MESSAGE_QUEUE_URL: points at Redis but the redis package is not installed; "
         "install Nexus with its redis extra: pip install -e '.[redis]'"),
        ("REDIS_URL", "redis://127.0.0.1:6379/0",
         "REDIS_URL: points at Redis but the redis package is not installed; "
         "install Nexus with its redis extra: pip install -e '.[redis]'"),
    ]:
        refused = subprocess.run(
            [str(bin_dir / "nexus"), "serve"], cwd=elsewhere, env=clean_env(bin_dir, **{variable: url}),
            capture_output=True, text=True, timeout=60,
        )
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.strip() == f"nexus: configuration error: {message}"

    port = services.free_port()
    with started(
        [str(bin_dir / "nexus"), "serve"], cwd=elsewhere, env=clean_env(bin_dir, PORT=str(port)), port=port,
        log_path=tmp_path / "serve.log",
    ) as server:
        # The dashboard's templates and static files come with the install.
        login = requests.get(server.url + "/dashboard/login", timeout=10)
        assert login.status_code == 200 and 'name="password"' in login.text
        stylesheet = re.search(r'href="(/dashboard/assets/dashboard\.css[^"]*)"', login.text)
        assert stylesheet, login.text
        css = requests.get(server.url + stylesheet.group(1).replace("&amp;", "&"), timeout=10)
        assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css") and css.text.strip()

        # The migrations ran on the default database, a SQLite file in ./instance of the folder it runs in.
        with contextlib.closing(sqlite3.connect(elsewhere / "instance" / "nexus.db")) as conn:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            (revision,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        assert {"users", "rooms", "messages", "outbox", "alembic_version"} <= tables
        assert revision

        # The README's next step: log in as the demo user it printed, then `nexus client`.
        password = re.search(r"Created demo user: username=demo password=(\S+)", server.log())
        assert password, server.log()
        login = requests.post(
            server.url + "/api/auth/login", json={"username": "demo", "password": password.group(1)}, timeout=10
        )
        assert login.status_code == 200, login.text
        token = login.json()["accessToken"]
        for transport in ("websocket", "polling"):
            client = subprocess.run(
                [str(bin_dir / "nexus"), "client", server.url, "--token", token, "--transport", transport,
                 "--run", "ping", "--wait", "0.3"],
                cwd=elsewhere, env=clean_env(bin_dir), capture_output=True, text=True, timeout=60,
            )
            assert client.returncode == 0, client.stdout + client.stderr
            lines = [json.loads(line) for line in client.stdout.splitlines()]
            assert {"type": "transport", "data": transport} in lines
            welcome = next(line["data"] for line in lines if line.get("event") == "connected")
            assert welcome["user"]["username"] == "demo"
            assert any(line["type"] == "ack" and line["event"] == "ping" and line["data"]["success"] for line in lines)
    assert server.process.returncode == 0, server.log()


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database on the local PostgreSQL server, in Heroku's postgres:// form."""
    import psycopg

    admin = services.postgres_admin_url()
    name = "nexus_install_" + uuid.uuid4().hex[:12]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rpartition("/")[0].replace("postgresql://", "postgres://", 1) + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# A Redis database of its own, emptied before and after.
INSTALL_REDIS_DB = 9


@pytest.mark.postgres
@pytest.mark.redis
def test_requirements_txt_runs_the_procfile_on_postgresql_and_redis(tmp_path):
    services.require("postgres")
    services.require("redis")
    import redis
    import socketio

    redis_url = services.REDIS_URL.rpartition("/")[0] + f"/{INSTALL_REDIS_DB}"
    store = redis.Redis.from_url(redis_url)
    store.flushdb()
    app_dir = fresh_copy(tmp_path)  # what the buildpack gets: the repository, run from its root
    assert (app_dir / ".python-version").read_text().strip() == "3.11"
    bin_dir = fresh_venv(tmp_path, "-r", "requirements.txt", cwd=app_dir)
    # Every package the deploy installs is pinned (a dependency added to setup.cfg is pinned too).
    frozen = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "freeze", "--exclude", "nexus"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()
    pinned = [line for line in (app_dir / "requirements.txt").read_text().splitlines() if "==" in line]
    assert sorted(frozen, key=str.lower) == sorted(pinned, key=str.lower)

    port = services.free_port()
    with fresh_postgres_database() as database_url:
        env = clean_env(
            bin_dir, PORT=str(port), DATABASE_URL=database_url, REDIS_URL=redis_url, NEXUS_ENV="production",
            JWT_SECRET=SECRET, FRONTEND_URL="https://app.example.com",
        )
        for step in (["bash", "-c", "exec " + procfile_command("release")],
                     [str(bin_dir / "nexus"), "create-user", "erin", "--password", "correct-horse-1"]):
            done = subprocess.run(step, cwd=app_dir, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
        token = subprocess.run(
            [str(bin_dir / "nexus"), "token", "erin"], cwd=app_dir, env=env, capture_output=True, text=True, timeout=60
        )
        assert token.returncode == 0, token.stderr

        try:
            with started(
                ["bash", "-c", "exec " + procfile_command("web")], cwd=app_dir, env=env, port=port,
                log_path=tmp_path / "web.log",
            ) as web:
                ready = requests.get(web.url + "/health/ready", timeout=10)
                assert ready.status_code == 200, ready.text

                welcome: list[dict] = []
                client = socketio.Client(reconnection=False)
                client.on("connected", welcome.append)
                client.connect(web.url, auth={"token": token.stdout.strip()}, transports=["websocket"], wait_timeout=10)
                try:
                    assert client.transport() == "websocket"
                    pong = client.call("ping", {"timestamp": 1}, timeout=10)
                    assert pong["success"] is True
                    assert welcome and welcome[0]["user"]["username"] == "erin"
                finally:
                    client.disconnect()
                # Presence is kept in the Redis it was given.
                assert store.dbsize() > 0
        finally:
            store.flushdb()
    assert web.process.returncode == 0, web.log()
