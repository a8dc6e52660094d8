"""The broadcast-records migration: it upgrades, downgrades and upgrades again, keeping the data around it."""
from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect, text

from nexus.config import normalize_database_url
from tests.support import services
from tests.support.live import database_for_test
from tests.test_cli import nexus

BEFORE = "bbae8cbca130"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_broadcasts_table_comes_and_goes_with_its_revision(tmp_path, backend, monkeypatch):
    if backend == "postgres":
        services.require("postgres")
        monkeypatch.setenv("DATABASE_URL", services.postgres_admin_url())
    else:
        monkeypatch.delenv("DATABASE_URL", raising=False)
    with database_for_test(tmp_path) as url:
        env = {"DATABASE_URL": url, "NEXUS_INSTANCE_PATH": str(tmp_path)}
        engine = create_engine(normalize_database_url(url, str(tmp_path)))
        try:
            assert nexus("db", "upgrade", env=env).returncode == 0
            tables = set(inspect(engine).get_table_names())
            assert {"broadcasts", "notifications", "users"} <= tables
            indexes = {index["name"] for index in inspect(engine).get_indexes("broadcasts")}
            assert {"ix_broadcasts_kind_id", "ix_broadcasts_sender_user_id"} <= indexes
            with engine.begin() as conn:
                conn.execute(text(
                    "INSERT INTO users (username, display_name, password_hash, role, status, created_at, updated_at)"
                    " VALUES ('kept', 'Kept', 'x', 'user', 'offline', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ))

            down = nexus("db", "downgrade", BEFORE, env=env)
            assert down.returncode == 0, down.stderr
            inspect_after = inspect(engine)
            assert "broadcasts" not in inspect_after.get_table_names()
            with engine.connect() as conn:
                assert conn.execute(text("SELECT username FROM users")).scalars().all() == ["kept"]

            up = nexus("db", "upgrade", env=env)
            assert up.returncode == 0 and "broadcast records" in up.stderr, up.stderr
            check = nexus("db", "check", env=env)
            assert check.returncode == 0, check.stdout + check.stderr
        finally:
            engine.dispose()
