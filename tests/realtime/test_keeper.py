"""The upkeep greenlet's cleanup: expired revocations, stale typing states and catch-up screens, logged."""
from __future__ import annotations

import logging
import time
from datetime import timedelta

from nexus.models import RevokedToken, utcnow
from nexus.realtime.keeper import Keeper
from nexus.services.rooms import Actor


def test_cleanup_removes_what_is_stale_and_says_what(app, db, make_user, caplog):
    alice = make_user("alice")
    db.session.add_all([
        RevokedToken(jti="old", user_id=alice.id, token_type="access", expires_at=utcnow() - timedelta(hours=1)),
        RevokedToken(jti="live", user_id=alice.id, token_type="access", expires_at=utcnow() + timedelta(hours=1)),
    ])
    db.session.commit()
    chat = app.extensions["nexus.chat"]
    actor = Actor(user_id=alice.id, role="user", username="alice", display_name="alice")
    chat.typing._typing[("general", actor.member_key)] = type(
        "Stale", (), {"actor": actor, "sid": "s1", "deadline": time.monotonic() - 3600}
    )()
    chat.gate.hold("/", "general", "s2")
    chat.gate.release("/", "general", "s2", 5)
    chat.gate._rooms[("/", "general")]["s2"].until = time.monotonic() - 1
    keeper = Keeper.for_app(app, sleep=lambda seconds: None)
    [cleanup] = [task for task in keeper.tasks if task.name == "cleanup"]
    with caplog.at_level(logging.INFO, logger="nexus.keeper"):
        keeper.run_once(force=True)
    assert "cleanup removed revoked_tokens=1 typing=1 catch_up_screens=1" in caplog.text
    assert [t.jti for t in db.session.query(RevokedToken).all()] == ["live"]
    assert not chat.typing._typing and len(chat.gate) == 0
    assert cleanup.due > time.monotonic() + 200  # next run after NEXUS_CLEANUP_INTERVAL_S (300)
