"""Catch-up without duplicates: live room messages are held back from a socket while it replays history.

A socket that rejoins a room with the last `seq` it saw is replayed the missed messages from
the database. Live `room_message` events that reach this process meanwhile are held for that
socket, not sent; when the replay is done, the held ones newer than the replay go out in `seq`
order. For a while afterwards the socket is still screened: a message that was committed before
the replay read the database, but whose broadcast was still on its way through the message
queue, is dropped instead of arriving twice.

The screening happens in the client manager (see nexus.realtime.queue), where python-socketio
fans an event out to the sockets of a room: it adds the held sockets to `skip_sid`.

The gate also remembers, for a while, whose access to a room was just revoked (a member removed,
a user banned or demoted; see nexus.realtime.control): such a user's sockets cannot enter the
room again, and a catch-up already under way for them replays nothing more.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from threading import Lock
from typing import Any, Iterable

from nexus.realtime.events import ROOM_MESSAGE

#: How long a socket is screened for late duplicates after its catch-up.
SCREEN_S = 30.0
#: Live messages held for one socket during one catch-up, at most (the rest is for history paging).
MAX_HELD = 1000
#: How long a revocation keeps a user out of a room here: the database refuses them once the
#: revoking transaction has committed, which is well within this.
REVOKED_S = 30.0


@dataclass
class _Hold:
    holding: bool = True
    high_water: int = -1
    until: float = 0.0
    held: dict[int, Any] = field(default_factory=dict)
    overflow: bool = False


class RoomGate:
    """Per (namespace, room, sid): hold live room messages during a catch-up, then screen duplicates."""

    def __init__(self, screen_s: float = SCREEN_S, max_held: int = MAX_HELD):
        self.screen_s = screen_s
        self.max_held = max_held
        self._lock = Lock()
        self._rooms: dict[tuple[str, str], dict[str, _Hold]] = {}
        self._revoked: dict[tuple[str | None, int], float] = {}  # (room or None for all, user) -> until

    def hold(self, namespace: str, room: str, sid: str) -> None:
        """From now on, live `room_message` events for this socket in this room are held back."""
        with self._lock:
            self._rooms.setdefault((namespace, room), {})[sid] = _Hold()

    def release(self, namespace: str, room: str, sid: str, replayed_up_to: int | None) -> tuple[list[Any], bool]:
        """End the hold: the held messages after `replayed_up_to`, in seq order, once each.

        With `replayed_up_to=None` (nothing was replayed) every held message is returned. The
        socket stays screened for `screen_s` seconds against messages up to the high-water mark.
        The flag is False if more than `max_held` arrived meanwhile (the client pages history).
        """
        with self._lock:
            hold = self._rooms.get((namespace, room), {}).get(sid)
            if hold is None:
                return [], True
            floor = -1 if replayed_up_to is None else replayed_up_to
            ready = [hold.held[seq] for seq in sorted(hold.held) if seq > floor]
            hold.high_water = max([floor, *hold.held])
            hold.holding = False
            hold.held = {}
            hold.until = time.monotonic() + self.screen_s
            return ready, not hold.overflow

    def forget(self, namespace: str, room: str, sid: str) -> None:
        """The socket left the room (or disconnected)."""
        with self._lock:
            sockets = self._rooms.get((namespace, room))
            if sockets is not None:
                sockets.pop(sid, None)
                if not sockets:
                    del self._rooms[(namespace, room)]

    def screen(self, namespace: str, room: Any, event: str, data: Any) -> list[str]:
        """The sockets that must not get this emission now (held, or already replayed)."""
        if not self._rooms or event != ROOM_MESSAGE or not isinstance(room, str):
            return []
        seq = data.get("seq") if isinstance(data, dict) else None
        if not isinstance(seq, int):
            return []
        skip: list[str] = []
        now = time.monotonic()
        with self._lock:
            sockets = self._rooms.get((namespace, room))
            if not sockets:
                return []
            for sid, hold in list(sockets.items()):
                if hold.holding:
                    skip.append(sid)
                    if len(hold.held) < self.max_held:
                        hold.held[seq] = data
                    else:
                        hold.overflow = True
                elif now > hold.until:
                    del sockets[sid]
                elif seq <= hold.high_water:
                    skip.append(sid)
            if not sockets:
                del self._rooms[(namespace, room)]
        return skip

    def prune(self) -> int:
        """Forget screens whose window is over (sockets that joined and stayed quiet); returns how many."""
        now = time.monotonic()
        removed = 0
        with self._lock:
            for key, sockets in list(self._rooms.items()):
                for sid, hold in list(sockets.items()):
                    if not hold.holding and now > hold.until:
                        del sockets[sid]
                        removed += 1
                if not sockets:
                    del self._rooms[key]
            for key, until in list(self._revoked.items()):
                if now > until:
                    del self._revoked[key]
        return removed

    def revoke(self, room: str | None, user_id: int, ttl_s: float = REVOKED_S) -> None:
        """Keep a user out of a room (every room with `room=None`) here for `ttl_s` seconds."""
        with self._lock:
            self._revoked[(room, user_id)] = time.monotonic() + ttl_s

    def restore(self, room: str | None, user_id: int) -> None:
        """Lift a revocation (the user was added back, or the revoking change did not commit)."""
        with self._lock:
            self._revoked.pop((room, user_id), None)

    def is_revoked(self, room: str, user_id: int | None) -> bool:
        """True while the user's access to the room is being (or was just) revoked."""
        if not self._revoked or user_id is None:
            return False
        now = time.monotonic()
        with self._lock:
            for key in ((room, user_id), (None, user_id)):
                until = self._revoked.get(key)
                if until is not None:
                    if now < until:
                        return True
                    del self._revoked[key]
        return False

    def __len__(self) -> int:
        return sum(len(sockets) for sockets in self._rooms.values())


def merged_skip(skip_sid: Any, extra: Iterable[str]) -> list[Any]:
    """python-socketio's `skip_sid` (None, a sid or a list) with more sids added."""
    base = skip_sid if isinstance(skip_sid, list) else ([] if skip_sid is None else [skip_sid])
    return [*base, *extra]
