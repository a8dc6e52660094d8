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


def test_the_heartbeat_goes_on_while_another_upkeep_task_is_stuck(app):
    """A task that waits long (reconciling against a stalled database) holds up the shared loop,
    never the heartbeat: otherwise this instance's heartbeat key would expire and the other
    instances would reap its live sockets and announce its users offline."""
    import threading

    keeper = Keeper.for_app(app, sleep=time.sleep)
    by_name = {task.name: task for task in keeper.tasks}
    assert by_name["heartbeat"].alone and not any(t.alone for t in keeper.tasks if t.name != "heartbeat")
    beats: list[float] = []
    stuck, release = threading.Event(), threading.Event()

    def stall() -> None:
        stuck.set()
        release.wait(10)

    by_name["heartbeat"].run, by_name["heartbeat"].every_s = (lambda: beats.append(time.monotonic())), 0.05
    by_name["away"].run, by_name["away"].due = stall, 0.0
    loops = [threading.Thread(target=keeper.run, daemon=True), threading.Thread(target=keeper.run_alone, daemon=True)]
    for loop in loops:
        loop.start()
    try:
        assert stuck.wait(5), "the shared loop never ran the stuck task"
        stalled_at = time.monotonic()
        # Five heartbeats while the other task is still stuck (one every 50 ms: a quarter of a
        # second); without a loop of its own the heartbeat waits for the stuck task, and none come.
        five_beats = threading.Event()
        by_name["heartbeat"].run = lambda: (beats.append(time.monotonic()),
                                            len([b for b in beats if b > stalled_at]) >= 5 and five_beats.set())
        assert five_beats.wait(5), [beat - stalled_at for beat in beats if beat > stalled_at]
        assert not release.is_set()  # the other task was stuck all along
    finally:
        release.set()
        keeper.stop()
        for loop in loops:
            loop.join(5)
    assert not any(loop.is_alive() for loop in loops)
