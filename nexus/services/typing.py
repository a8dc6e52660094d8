"""Typing indicators: in memory only, coalesced, and expiring by themselves."""
from __future__ import annotations

import time
from dataclasses import dataclass
from threading import Lock
from typing import Any, Callable

from nexus.realtime import broadcast, events
from nexus.services.rooms import Actor


@dataclass
class _Typing:
    actor: Actor
    sid: str
    deadline: float


class TypingTracker:
    """Who is typing where; `user_typing` goes to the others in the room on each change only."""

    def __init__(self, timeout_s: float, spawn: Callable[..., Any], sleep: Callable[[float], Any], app: Any):
        self.timeout_s = timeout_s
        self._spawn = spawn
        self._sleep = sleep
        self._app = app
        self._lock = Lock()
        self._typing: dict[tuple[str, str], _Typing] = {}

    def start(self, actor: Actor, room: str, sid: str) -> bool:
        """Typing began (or goes on); True if that was news worth an event."""
        key = (room, actor.member_key)
        with self._lock:
            entry = self._typing.get(key)
            if entry is not None:
                entry.deadline = time.monotonic() + self.timeout_s
                return False
            self._typing[key] = _Typing(actor, sid, time.monotonic() + self.timeout_s)
        self._announce(actor, room, sid, True)
        self._spawn(self._expire, key)
        return True

    def stop(self, actor: Actor, room: str) -> bool:
        """Typing ended; True if it had been announced."""
        with self._lock:
            entry = self._typing.pop((room, actor.member_key), None)
        if entry is None:
            return False
        self._announce(actor, room, entry.sid, False)
        return True

    def stop_everywhere(self, actor: Actor, sid: str) -> None:
        """A socket went away: end the typing it started."""
        with self._lock:
            keys = [key for key, entry in self._typing.items() if entry.sid == sid]
        for room, _ in keys:
            self.stop(actor, room)

    def sweep(self) -> int:
        """End typing states past their deadline whose expiry greenlet is gone; returns how many."""
        now = time.monotonic()
        with self._lock:
            stale = [(key, entry) for key, entry in self._typing.items() if entry.deadline + self.timeout_s < now]
            for key, _ in stale:
                del self._typing[key]
        for (room, _), entry in stale:
            self._announce(entry.actor, room, entry.sid, False)
        return len(stale)

    def is_typing(self, actor: Actor, room: str) -> bool:
        return (room, actor.member_key) in self._typing

    def _expire(self, key: tuple[str, str]) -> None:
        while True:
            with self._lock:
                entry = self._typing.get(key)
                if entry is None:
                    return
                remaining = entry.deadline - time.monotonic()
                if remaining <= 0:
                    del self._typing[key]
            if remaining <= 0:
                with self._app.app_context():
                    self._announce(entry.actor, key[0], entry.sid, False)
                return
            self._sleep(remaining)

    @staticmethod
    def _announce(actor: Actor, room: str, sid: str, typing: bool) -> None:
        broadcast.emit(
            events.USER_TYPING,
            {"roomId": room, "room": room, "user": actor.public(), "userId": actor.public()["id"], "isTyping": typing},
            room=room,
            skip_sid=sid,
        )
