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


# -- notify and broadcast (delivery through a real queue: tests/live/test_emitter.py) -----------------

UNREACHABLE_QUEUE = "redis://127.0.0.1:1/0"


@pytest.mark.parametrize(
    "args",
    [["notify", "alice", "Title", "text"], ["broadcast", "hello"], ["broadcast", "--admins", "hello"]],
)
def test_notify_and_broadcast_without_a_queue_name_the_variable(runner, make_user, args):
    make_user("alice")
    result = runner.invoke(args=args)
    assert result.exit_code == 1
    assert "MESSAGE_QUEUE_URL" in result.output and "not set" in result.output
    from nexus.extensions import db
    from nexus.models import Broadcast, Notification

    assert db.session.query(Notification).count() == db.session.query(Broadcast).count() == 0


def test_broadcast_takes_one_audience_at_most(runner):
    result = runner.invoke(args=["broadcast", "--admins", "--room", "general", "hello"])
    assert result.exit_code == 2 and "choose one of --admins, --room" in result.output
    assert runner.invoke(args=["notify", "alice", "t", "m", "--type", "fatal"]).exit_code == 2


@pytest.fixture
def queued_app(app_factory):
    """An app whose MESSAGE_QUEUE_URL names a port where no broker listens."""
    return app_factory(message_queue_url=UNREACHABLE_QUEUE)


def test_notify_an_unknown_user_exits_with_the_code(queued_app):
    result = queued_app.test_cli_runner().invoke(args=["notify", "nobody-here", "Title", "text"])
    assert result.exit_code == 1
    assert "USER_NOT_FOUND: No user named 'nobody-here'." in result.output


def test_notify_saves_and_says_so_when_the_queue_cannot_be_reached(queued_app, monkeypatch):
    import nexus.cli
    from nexus.extensions import db
    from nexus.models import Notification
    from nexus.services.users import create_user

    monkeypatch.setattr(nexus.cli, "FLUSH_TIMEOUT_S", 0.3)
    with queued_app.app_context():
        alice = create_user("alice", "correct-horse-1")
        alice_id = alice.id
    result = queued_app.test_cli_runner().invoke(args=["notify", "alice", "Title", "text", "--type", "error"])
    assert result.exit_code == 1
    assert "saved, but the live event could not reach the message queue" in result.output
    with queued_app.app_context():
        (row,) = db.session.query(Notification).all()
        assert (row.user_id, row.title, row.type) == (alice_id, "Title", "error")


def test_an_emitter_refuses_without_a_queue_and_keeps_events_while_the_queue_is_down(config_factory, app_factory):
    from nexus.config import ConfigError
    from nexus.emitter import Emitter

    with pytest.raises(ConfigError) as refused:
        Emitter(config_factory(message_queue_url=None))
    assert refused.value.variable == "MESSAGE_QUEUE_URL"

    app = app_factory(message_queue_url=UNREACHABLE_QUEUE)  # creates the tables
    with app.app_context():
        from nexus.services.users import create_user

        bob_id = create_user("bob", "correct-horse-1").id
    emitter = Emitter(app.config["NEXUS"], name="nightly")
    try:
        sent = emitter.notify(bob_id, "Nightly", "done", data={"rows": 3})
        assert sent["from"] == {"id": None, "name": "service:nightly"} and sent["data"] == {"rows": 3}
        by_name = emitter.notify("bob", "Again", "by name")
        assert by_name["id"] != sent["id"]
        status = emitter.queue_status()
        assert status["ok"] is False and status["pending"] >= 2 and "OperationalError" in status["lastError"]
        assert emitter.flush(0.2) is False
        from nexus.errors import NexusError

        with pytest.raises(NexusError) as missing:
            emitter.notify(999_999, "t", "m")
        assert missing.value.code == "USER_NOT_FOUND"
    finally:
        assert emitter.close(0.2) is False  # not sent: logged, connections released
    with pytest.raises(RuntimeError, match="closed"):
        emitter.system_message("too late")
