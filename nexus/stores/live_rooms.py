"""Who is connected in which chat room right now (live membership, not standing membership)."""
from __future__ import annotations

from threading import Lock
from typing import Protocol


class LiveRoomStore(Protocol):
    """Live membership: sockets of members in rooms, counted per member."""

    def add(self, room: str, member: str, sid: str) -> bool:
        """Record a socket in a room; True if it is the member's first socket there."""

    def remove(self, room: str, member: str, sid: str) -> bool:
        """Forget a socket in a room; True if it was the member's last socket there."""

    def rooms_of(self, sid: str) -> set[str]:
        """The rooms a socket is in."""

    def members(self, room: str) -> set[str]:
        """The members connected in a room."""

    def has_socket(self, room: str, sid: str) -> bool:
        """True if that socket is in the room."""


class MemoryLiveRooms:
    """LiveRoomStore of one process. Empty rooms are dropped as soon as they empty."""

    def __init__(self) -> None:
        self._lock = Lock()
        self._rooms: dict[str, dict[str, set[str]]] = {}
        self._by_sid: dict[str, set[str]] = {}

    def add(self, room: str, member: str, sid: str) -> bool:
        with self._lock:
            sockets = self._rooms.setdefault(room, {}).setdefault(member, set())
            first = not sockets
            sockets.add(sid)
            self._by_sid.setdefault(sid, set()).add(room)
            return first

    def remove(self, room: str, member: str, sid: str) -> bool:
        with self._lock:
            members = self._rooms.get(room)
            sockets = members.get(member) if members else None
            if not sockets or sid not in sockets:
                return False
            sockets.discard(sid)
            rooms = self._by_sid.get(sid)
            if rooms is not None:
                rooms.discard(room)
                if not rooms:
                    del self._by_sid[sid]
            if sockets:
                return False
            del members[member]
            if not members:
                del self._rooms[room]
            return True

    def rooms_of(self, sid: str) -> set[str]:
        return set(self._by_sid.get(sid, ()))

    def members(self, room: str) -> set[str]:
        return set(self._rooms.get(room, {}))

    def has_socket(self, room: str, sid: str) -> bool:
        return room in self._by_sid.get(sid, ())

    def room_count(self) -> int:
        return len(self._rooms)
