"""The `nexus` command: db upgrade on SQLite and PostgreSQL, create-user, token, client, emit."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nexus.services.tokens import resolve_token
from tests.support import services
from tests.support.live import database_for_test


def nexus(*args: str, env: dict[str, str], input: str | None = None, timeout: float = 60):
    return subprocess.run(
        [sys.executable, "-m", "nexus", *args],
        cwd=services.ROOT,
        env={"PATH": os.environ["PATH"], **env},
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_db_upgrade_then_models_match_migrations(tmp_path, backend, monkeypatch):
    if backend == "postgres":
        services.require("postgres")
        monkeypatch.setenv("DATABASE_URL", services.postgres_admin_url())
    else:
        monkeypatch.delenv("DATABASE_URL", raising=False)
    with database_for_test(tmp_path) as url:
        env = {"DATABASE_URL": url, "NEXUS_INSTANCE_PATH": str(tmp_path)}
        upgrade = nexus("db", "upgrade", env=env)
        assert upgrade.returncode == 0, upgrade.stderr
        assert "Running upgrade" in upgrade.stderr
        check = nexus("db", "check", env=env)
        assert check.returncode == 0, check.stderr
        assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_create_user_and_token(runner, app):
    result = runner.invoke(
        args=["create-user", "carol", "--password", "s3cret-pass", "--role", "moderator", "--department", "ops"]
    )
    assert result.exit_code == 0, result.output
    assert "Created moderator carol" in result.output
    again = runner.invoke(args=["create-user", "CAROL", "--password", "s3cret-pass"])
    assert again.exit_code != 0 and "CONFLICT" in again.output
    weak = runner.invoke(args=["create-user", "dave", "--password", "short"])
    assert weak.exit_code != 0 and "VALIDATION_ERROR" in weak.output

    token = runner.invoke(args=["token", "carol"])
    assert token.exit_code == 0
    with app.app_context():
        identity = resolve_token(token.output.strip())
        assert (identity.user.username, identity.user.role, identity.user.department) == ("carol", "moderator", "ops")
    assert runner.invoke(args=["token", "nobody"]).exit_code != 0


def test_emit_without_a_queue_says_so(runner):
    result = runner.invoke(args=["emit", "system_message", "--room", "all_users", "--data", "{}"])
    assert result.exit_code != 0
    assert "MESSAGE_QUEUE_URL is not set" in result.output
    bad = runner.invoke(args=["emit", "x", "--room", "all_users", "--data", "{nope"])
    assert bad.exit_code != 0 and "not JSON" in bad.output


@pytest.mark.live
@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_console_client_prints_every_event(live_server, transport):
    url, seeder = live_server.database()
    seeder.user("alice")
    server = live_server.start(url)
    result = nexus(
        "client", server.url, "--token", seeder.token("alice"), "--transport", transport,
        "--run", "ping", "--run", "emit nothing_here {}", "--wait", "0.5",
        env={}, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [(line["type"], line.get("event")) for line in lines]
    assert ("transport", None) in kinds and lines[kinds.index(("transport", None))]["data"] == transport
    welcome = next(line["data"] for line in lines if line.get("event") == "connected")
    assert welcome["user"]["username"] == "alice"
    ping_ack = next(line["data"] for line in lines if line["type"] == "ack" and line["event"] == "ping")
    assert ping_ack["success"] is True
    assert any(line.get("event") == "pong" for line in lines)
    unknown = next(line["data"] for line in lines if line["type"] == "ack" and line["event"] == "nothing_here")
    assert unknown["error"]["code"] == "UNKNOWN_EVENT"


@pytest.mark.live
def test_console_client_reads_commands_from_stdin_and_reports_refusals(live_server):
    url, seeder = live_server.database()
    server = live_server.start(url)
    result = nexus("client", server.url, "--transport", "websocket", env={}, input="ping\nquit\n", timeout=60)
    assert result.returncode == 0, result.stderr
    assert '"event": "ping"' in result.stdout and '"guest": true' in result.stdout
    refused = nexus("client", server.url, "--token", "garbage", "--transport", "websocket", env={}, timeout=60)
    assert refused.returncode == 1
    assert '"type": "connect_error"' in refused.stdout and "INVALID_TOKEN" in refused.stdout
