"""Stores of one process: the embedded default, when no Redis is configured."""
from __future__ import annotations

import time
from threading import Lock

from nexus.stores.base import STATS_TTL_S


class MemoryTally:
    """Tally of one process: there are no other instances to count or to reap.

    A member's versions start at the clock in microseconds (or at `origin`), as in Redis: the
    database keeps the version of the last status it was written from, and a restarted process
    must hand out higher ones.
    """

    def __init__(self, origin: int | None = None) -> None:
        self._lock = Lock()
        self._counts: dict[str, dict[str, int]] = {}
        self._versions: dict[tuple[str, str], int] = {}
        self._origin = origin

    def add(self, scope: str, member: str) -> bool:
        with self._lock:
            return self._add(scope, member)

    def enter(self, scope: str, member: str) -> int:
        with self._lock:  # the count and the version move together
            return self._bump(scope, member) if self._add(scope, member) else 0

    def leave(self, scope: str, member: str) -> int:
        with self._lock:
            return self._bump(scope, member) if self._remove(scope, member) else 0

    def bump(self, scope: str, member: str) -> int:
        with self._lock:
            return self._bump(scope, member)

    def version(self, scope: str, member: str) -> int:
        return self._versions.get((scope, member), 0)

    def versions(self, scope: str, members: list[str]) -> list[int]:
        return [self._versions.get((scope, member), 0) for member in members]

    def state(self, scope: str, member: str) -> tuple[bool, int]:
        with self._lock:
            return member in self._counts.get(scope, ()), self._versions.get((scope, member), 0)

    def versioned_members(self, scope: str) -> dict[str, int]:
        with self._lock:
            return {member: self._versions.get((scope, member), 0) for member in self._counts.get(scope, ())}

    def restate(self, scope: str, members: list[str]) -> list[tuple[bool, int]]:
        with self._lock:
            present = self._counts.get(scope, {})
            return [(member in present, self._bump(scope, member)) for member in members]

    def _bump(self, scope: str, member: str) -> int:
        version = self._versions.get((scope, member))
        if version is None:
            version = int(time.time() * 1_000_000) if self._origin is None else self._origin
        self._versions[(scope, member)] = version + 1
        return version + 1

    def remove(self, scope: str, member: str) -> bool:
        with self._lock:
            return self._remove(scope, member)

    def _add(self, scope: str, member: str) -> bool:
        members = self._counts.setdefault(scope, {})
        members[member] = members.get(member, 0) + 1
        return members[member] == 1

    def _remove(self, scope: str, member: str) -> bool:
        members = self._counts.get(scope)
        if not members or member not in members:
            return False
        members[member] -= 1
        if members[member] > 0:
            return False
        del members[member]
        if not members:
            del self._counts[scope]
        return True

    def members(self, scope: str) -> set[str]:
        return set(self._counts.get(scope, ()))

    def scopes(self) -> int:
        return len(self._counts)

    def reap(self) -> list[tuple[str, str]]:
        return []

    def heartbeat(self) -> list[tuple[str, str]]:
        return []

    def close(self) -> None:
        with self._lock:
            self._counts.clear()


class MemoryPresenceStore:
    """Presence details of one process; remembered statuses expire like Redis keys would."""

    def __init__(self) -> None:
        self._lock = Lock()
        self._status: dict[int, tuple[str, float | None]] = {}
        self._activity: dict[int, float] = {}
        self._away: set[int] = set()

    def chosen_status(self, user_id: int) -> str | None:
        entry = self._status.get(user_id)
        if entry is None:
            return None
        status, expires = entry
        if expires is not None and expires <= time.monotonic():
            self._status.pop(user_id, None)
            return None
        return status

    def choose_status(self, user_id: int, status: str) -> None:
        self._status[user_id] = (status, None)

    def remember_status(self, user_id: int, seconds: int) -> None:
        status = self.chosen_status(user_id)
        if status is not None:
            self._status[user_id] = (status, time.monotonic() + seconds)

    def touch(self, user_id: int, at: float) -> None:
        self._activity[user_id] = at

    def last_activity(self, user_id: int) -> float | None:
        return self._activity.get(user_id)

    def idle_since(self, cutoff: float, limit: int) -> list[int]:
        idle = sorted((at, user_id) for user_id, at in list(self._activity.items()) if at < cutoff)
        return [user_id for _, user_id in idle[:limit]]  # the longest idle first, as in Redis

    def forget_activity(self, user_id: int) -> None:
        self._activity.pop(user_id, None)
        self._away.discard(user_id)

    def set_away(self, user_id: int) -> bool:
        with self._lock:
            self._activity.pop(user_id, None)  # the next sweep does not see them again
            if user_id in self._away:
                return False
            self._away.add(user_id)
            return True

    def clear_away(self, user_id: int) -> bool:
        with self._lock:
            if user_id not in self._away:
                return False
            self._away.discard(user_id)
            return True

    def is_away(self, user_id: int) -> bool:
        return user_id in self._away

    def statuses(self, user_ids: list[int]) -> dict[int, tuple[str | None, bool]]:
        return {user_id: (self.chosen_status(user_id), user_id in self._away) for user_id in user_ids}


class MemoryStatsBoard:
    """One process: its own stats only."""

    def __init__(self) -> None:
        self._posted: dict[str, tuple[float, dict]] = {}

    def publish(self, instance_id: str, stats: dict) -> None:
        self._posted[instance_id] = (time.monotonic(), stats)

    def all(self) -> list[dict]:
        cutoff = time.monotonic() - STATS_TTL_S
        return [stats for at, stats in self._posted.values() if at >= cutoff]
