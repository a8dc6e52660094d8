"""Who is connected in which chat room right now (live membership, not standing membership).

The sockets of this process are tracked here; members are counted across instances by a Tally
(memory for one process, Redis for many), once per member however many sockets it has.
"""
from __future__ import annotations

from threading import Lock

from nexus.stores.base import Tally


def room_scope(room: str) -> str:
    """The tally scope of a chat room."""
    return "room:" + room


class LiveRooms:
    """Live membership: sockets of this process in rooms, members counted over every instance."""

    def __init__(self, tally: Tally):
        self.tally = tally
        self._lock = Lock()
        self._by_sid: dict[str, dict[str, str]] = {}  # sid -> room -> member

    def add(self, room: str, member: str, sid: str) -> bool:
        """Record a socket in a room; True if it is the member's first socket there."""
        with self._lock:
            rooms = self._by_sid.setdefault(sid, {})
            if room in rooms:
                return False
            rooms[room] = member
        return self.tally.add(room_scope(room), member)

    def remove(self, room: str, member: str, sid: str) -> bool:
        """Forget a socket in a room; True if it was the member's last socket there."""
        with self._lock:
            rooms = self._by_sid.get(sid)
            if not rooms or room not in rooms:
                return False
            del rooms[room]
            if not rooms:
                del self._by_sid[sid]
        return self.tally.remove(room_scope(room), member)

    def rooms_of(self, sid: str) -> set[str]:
        """The rooms a socket of this process is in."""
        return set(self._by_sid.get(sid, ()))

    def members(self, room: str) -> set[str]:
        """The members connected in a room, on every instance."""
        return self.tally.members(room_scope(room))

    def has_socket(self, room: str, sid: str) -> bool:
        """True if that socket of this process is in the room."""
        return room in self._by_sid.get(sid, ())

    def local_room_count(self) -> int:
        """Rooms with at least one socket of this process in them."""
        with self._lock:
            return len({room for rooms in self._by_sid.values() for room in rooms})
