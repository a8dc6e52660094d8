"""Typing: coalesced, ended by typing_stop or by itself, never stored."""
from __future__ import annotations

import threading
import time

from nexus.services.rooms import Actor
from nexus.services.typing import TypingTracker

ALICE = Actor(user_id=1, role="user", username="alice", display_name="Alice")


def tracker(app, timeout_s=0.3):
    return TypingTracker(timeout_s, lambda fn, *a: threading.Thread(target=fn, args=a, daemon=True).start(),
                         time.sleep, app)


def typing_events(broadcasts):
    return [(e["room"], e["data"]["isTyping"]) for e in broadcasts.events("user_typing")]


def test_repeated_starts_are_one_event_and_stop_ends_it(app, broadcasts):
    typing = tracker(app, timeout_s=30)
    with app.app_context():
        assert typing.start(ALICE, "general", "sid-1") is True
        assert typing.start(ALICE, "general", "sid-1") is False
        assert typing.stop(ALICE, "general") is True
        assert typing.stop(ALICE, "general") is False
    assert typing_events(broadcasts) == [("general", True), ("general", False)]
    [first] = broadcasts.events("user_typing")[:1]
    assert first["data"]["user"]["username"] == "alice"


def test_typing_expires_by_itself(app, broadcasts):
    typing = tracker(app, timeout_s=0.3)
    with app.app_context():
        typing.start(ALICE, "general", "sid-1")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(typing_events(broadcasts)) < 2:
        time.sleep(0.05)
    assert typing_events(broadcasts) == [("general", True), ("general", False)]
    assert not typing.is_typing(ALICE, "general")


def test_a_closed_socket_stops_its_typing(app, broadcasts):
    typing = tracker(app, timeout_s=30)
    with app.app_context():
        typing.start(ALICE, "one", "sid-1")
        typing.start(ALICE, "two", "sid-1")
        typing.stop_everywhere(ALICE, "sid-1")
    assert sorted(typing_events(broadcasts)) == [("one", False), ("one", True), ("two", False), ("two", True)]
