"""Nexus as a real process on a free port, with a database prepared for it."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import requests

from tests.support import services

ROOT = services.ROOT


@contextlib.contextmanager
def database_for_test(tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a new PostgreSQL database when DATABASE_URL names one, else SQLite."""
    if services.database_url() is None:
        yield f"sqlite:///{tmp_path / ('live-' + uuid.uuid4().hex[:8] + '.db')}"
        return
    services.require("postgres")
    import psycopg

    admin = services.postgres_admin_url()
    name = "nexus_live_" + uuid.uuid4().hex[:12]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rpartition("/")[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Seeder:
    """An in-process app on a live server's database: migrates it, creates users, mints tokens."""

    def __init__(self, database_url: str, secret: str, instance_path: Path):
        from nexus import create_app
        from nexus.config import Config

        config = Config.from_env(
            {"DATABASE_URL": database_url},
            env="testing",
            jwt_secret=secret,
            instance_path=str(instance_path),
            async_mode="threading",
            message_queue_url=None,
            redis_url=None,
        )
        self.app = create_app(config)
        with self.app.app_context():
            from flask_migrate import upgrade

            upgrade()

    def user(self, username: str, *, password: str = "correct-horse-1", role: str = "user", **fields: Any) -> dict:
        from nexus.services.users import create_user, find_by_username

        with self.app.app_context():
            user = find_by_username(username) or create_user(username, password, role=role, **fields)
            return {"id": user.id, "username": user.username, "password": password, "role": user.role}

    def token(self, username: str) -> str:
        from nexus.services.tokens import issue_access_token
        from nexus.services.users import find_by_username

        with self.app.app_context():
            return issue_access_token(find_by_username(username))

    def close(self) -> None:
        from nexus.extensions import db

        with self.app.app_context():
            db.session.remove()
            db.engine.dispose()


class LiveServer:
    """One running Nexus process."""

    def __init__(self, command: list[str], env: dict[str, str], port: int, log_path: Path, *, cwd: Path = ROOT):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log.close()
        return self.process.returncode


class LiveServerFactory:
    """Starts servers that share a JWT secret, so tokens minted by the seeder work on all of them."""

    def __init__(self, tmp_path: Path, secret: str):
        self.tmp_path = tmp_path
        self.secret = secret
        self.servers: list[LiveServer] = []
        self.seeders: list[Seeder] = []
        self._databases = contextlib.ExitStack()

    def database(self) -> tuple[str, Seeder]:
        """A fresh migrated database and its seeder."""
        url = self._databases.enter_context(database_for_test(self.tmp_path))
        seeder = Seeder(url, self.secret, self.tmp_path / "seeder")
        self.seeders.append(seeder)
        return url, seeder

    def start(
        self, database_url: str, *, kind: str = "serve", env: dict[str, str] | None = None, port: int | None = None,
        wait: bool = True,
    ) -> LiveServer:
        """Start `nexus serve` (kind="serve") or the Procfile's web command (kind="procfile").

        With wait=False the process is started and returned at once (call its wait_ready), so
        that several instances boot side by side."""
        port = port or services.free_port()
        index = len(self.servers)
        server_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("NEXUS_", "SOCKETIO_", "REDIS_"))},
            "PORT": str(port),
            "DATABASE_URL": database_url,
            "JWT_SECRET": self.secret,
            "NEXUS_ENV": "development",
            "NEXUS_INSTANCE_PATH": str(self.tmp_path / f"instance-{index}"),
            "NEXUS_INSTANCE_ID": f"live-{index}",
            "NEXUS_DEMO_USERS": "0",
            "PYTHONUNBUFFERED": "1",
            # Functional tests send floods on purpose; the rate-limit tests set their own limit.
            "SOCKETIO_RATE_LIMIT_MAX_REQUESTS": "100000",
        }
        server_env.pop("MESSAGE_QUEUE_URL", None)
        server_env.update(env or {})
        if kind == "serve":
            command = [sys.executable, "-m", "nexus", "serve"]
        elif kind == "procfile":
            command = ["bash", "-c", "exec " + procfile_command("web")]
            server_env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + server_env.get("PATH", "")
        else:
            raise ValueError(kind)
        server = LiveServer(command, server_env, port, self.tmp_path / f"server-{index}.log")
        self.servers.append(server)
        if wait:
            server.wait_ready()
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()
        for seeder in self.seeders:
            seeder.close()
        self._databases.close()


def procfile_command(process: str) -> str:
    """The command of one process type in the Procfile."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process:
            return command.strip()
    raise KeyError(process)
