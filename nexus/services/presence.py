"""Presence: who is online, their status and last seen, the same on every instance.

A user is online while at least one of their sockets is connected, on any instance (the
Tally counts them). The status a user chose (online, away, busy, offline = invisible) is kept
in the PresenceStore while they are connected and for `status_restore_s` after. Activity is
recorded in the store at most every `touch_every_s` per user and in the database at most every
`last_seen_write_s`; a user with no activity for `away_after_s` is shown away until the next one.
The database `users.status` column always holds the status others see, so REST reads it directly.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from threading import Lock
from typing import Any, Callable, Iterable

from sqlalchemy import select, update

from nexus.config import Config
from nexus.errors import NexusError
from nexus.extensions import db
from nexus.models import User, isoformat
from nexus.realtime import broadcast, events
from nexus.services.rooms import Actor
from nexus.stores.base import PresenceStore, Tally

log = logging.getLogger("nexus.presence")

SCOPE = "presence"
STATUSES = ("online", "away", "busy", "offline")
MAX_ONLINE_LIST = 1000
ROSTER_TTL_S = 1.0


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


class Presence:
    """Presence of the users connected to this instance, kept consistent with every other one."""

    def __init__(self, tally: Tally, store: PresenceStore, config: Config, clock: Callable[[], float] = time.time):
        self.tally = tally
        self.store = store
        self.clock = clock
        self.away_after_s = config.away_after_s
        self.restore_s = config.status_restore_s
        self.last_seen_write_s = config.last_seen_write_s
        self.touch_every_s = max(0.5, min(15.0, config.away_after_s / 4))
        self._lock = Lock()
        self._seen_here: dict[int, float] = {}  # last activity of a user on this instance
        self._stored: dict[int, float] = {}  # last activity written to the store from here
        self._last_seen_due: dict[int, float] = {}  # activity not yet written to the database
        self._roster: tuple[tuple[int, ...], float, list[dict[str, Any]]] | None = None

    # -- connections ----------------------------------------------------------------

    def connected(self, actor: Actor, sid: str) -> bool:
        """A socket of the user connected; `user_online` to everyone if it is their first anywhere."""
        user_id = actor.user_id
        if user_id is None:
            return False
        now = self.clock()
        first = self.tally.add(SCOPE, str(user_id))
        self._write_activity(user_id, now)
        if not first:
            # A new socket is activity: an away user is back (touch would wait for its throttle).
            if self.store.clear_away(user_id) and (self.store.chosen_status(user_id) or "online") == "online":
                self._announce_status(user_id, "online", now)
            return False
        self._came_online(user_id, now, skip_sid=sid)
        db.session.commit()
        return True

    def disconnected(self, actor: Actor) -> bool:
        """A socket of the user went away; `user_offline` to everyone if it was their last anywhere."""
        user_id = actor.user_id
        if user_id is None or not self.tally.remove(SCOPE, str(user_id)):
            return False
        with self._lock:
            last_seen = self._seen_here.pop(user_id, None) or self.clock()
            self._stored.pop(user_id, None)
            self._last_seen_due.pop(user_id, None)
        self.went_offline([user_id], last_seen=last_seen)
        return True

    def went_offline(self, user_ids: Iterable[int], *, last_seen: float | None = None) -> None:
        """Users with no socket left anywhere (their last one closed, or their instance died)."""
        for user_id in user_ids:
            visible = self.store.chosen_status(user_id) != "offline"
            # Unknown when their instance died while they were away: the database keeps the last write.
            seen = last_seen or self.store.last_activity(user_id)
            self.store.remember_status(user_id, self.restore_s)
            self.store.forget_activity(user_id)
            user = self._save(user_id, status="offline", last_seen=seen)
            if user is not None and visible:
                broadcast.emit_after_commit(
                    db.session,
                    events.USER_OFFLINE,
                    {"userId": str(user_id), "lastSeen": isoformat(user.last_seen_at)},
                    room=events.ALL_USERS_ROOM,
                )
        db.session.commit()

    def back_online(self, user_ids: Iterable[int]) -> None:
        """Users whose sockets were presumed gone with a stalled instance that came back: online again."""
        for user_id in user_ids:
            self._came_online(user_id, self.clock(), skip_sid=None)
        db.session.commit()

    def _came_online(self, user_id: int, now: float, *, skip_sid: str | None) -> None:
        """Restore the user's chosen status and queue `user_online` (unless they chose to be invisible)."""
        status = self.store.chosen_status(user_id) or "online"
        self.store.choose_status(user_id, status)  # kept while connected (clears a restore expiry)
        user = self._save(user_id, status=status, last_seen=now)
        if user is not None and status != "offline":
            broadcast.emit_after_commit(
                db.session,
                events.USER_ONLINE,
                {"userId": str(user_id), "userInfo": self.user_info(user)},
                room=events.ALL_USERS_ROOM,
                skip_sid=skip_sid,
            )

    # -- status and activity --------------------------------------------------------

    def update_status(self, actor: Actor, status: str) -> dict[str, Any]:
        """The user chose a status; `user_updated` to everyone (and online/offline for invisibility)."""
        if actor.user_id is None:
            raise NexusError("FORBIDDEN", "Guests have no status; authenticate first.")
        if status not in STATUSES:
            raise NexusError("VALIDATION_ERROR", f"status: must be one of {', '.join(STATUSES)}.")
        user_id = actor.user_id
        was_visible = (self.store.chosen_status(user_id) or "online") != "offline"
        self.store.choose_status(user_id, status)
        self.store.clear_away(user_id)
        now = self.clock()
        self._write_activity(user_id, now)
        user = self._save(user_id, status=status, last_seen=now)
        if user is None:
            raise NexusError("USER_NOT_FOUND")
        update_event = {"userId": str(user_id), "status": status, "lastSeen": isoformat(user.last_seen_at)}
        session = db.session
        if status == "offline" and was_visible:
            broadcast.emit_after_commit(session, events.USER_OFFLINE, {"userId": str(user_id)}, room=events.ALL_USERS_ROOM)
        elif status != "offline" and not was_visible:
            online = {"userId": str(user_id), "userInfo": self.user_info(user)}
            broadcast.emit_after_commit(session, events.USER_ONLINE, online, room=events.ALL_USERS_ROOM)
        broadcast.emit_after_commit(session, events.USER_UPDATED, update_event, room=events.ALL_USERS_ROOM)
        session.commit()
        return update_event

    def touch(self, actor: Actor) -> None:
        """Activity on a socket of the user (any event); cheap unless something is due."""
        user_id = actor.user_id
        if user_id is None:
            return
        now = self.clock()
        with self._lock:
            before = self._seen_here.get(user_id, 0.0)
            self._seen_here[user_id] = now
            self._last_seen_due[user_id] = now
            # Within touch_every_s of both the last write and the last activity, the store is
            # fresh enough that the user cannot have been marked away: nothing to do.
            if now - self._stored.get(user_id, 0.0) < self.touch_every_s and now - before < self.touch_every_s:
                return
        self._write_activity(user_id, now)
        if self.store.clear_away(user_id) and (self.store.chosen_status(user_id) or "online") == "online":
            self._announce_status(user_id, "online", now)

    def sweep_away(self, limit: int = 1000) -> list[int]:
        """Show as away the users with no activity for away_after_s (unless they chose another status)."""
        marked = []
        for user_id in self.store.idle_since(self.clock() - self.away_after_s, limit):
            if (self.store.chosen_status(user_id) or "online") != "online":
                self.store.forget_activity(user_id)  # nothing to watch until they are active again
                continue
            if self.store.set_away(user_id):
                self._announce_status(user_id, "away", None)
                marked.append(user_id)
        return marked

    def flush_last_seen(self) -> int:
        """Write the activity seen since the last flush to the database, one row per user."""
        with self._lock:
            due, self._last_seen_due = self._last_seen_due, {}
        if not due:
            return 0
        db.session.execute(
            update(User), [{"id": user_id, "last_seen_at": _dt(at)} for user_id, at in due.items()]
        )
        db.session.commit()
        return len(due)

    def reconcile(self) -> int:
        """Users the database shows present who have no socket on any live instance: offline."""
        shown = set(db.session.scalars(select(User.id).where(User.status != "offline").limit(10_000)))
        if not shown:
            return 0
        present = {int(member) for member in self.tally.members(SCOPE)}
        stale = shown - present
        if stale:
            db.session.execute(update(User).where(User.id.in_(stale)).values(status="offline"))
            db.session.commit()
        return len(stale)

    # -- reading --------------------------------------------------------------------

    def online_users(self) -> list[dict[str, Any]]:
        """The users others can see online (invisible ones left out), with status and last seen.

        Every new connection gets this list, so it is read with one column query (no ORM objects)
        and the answer is reused while the set of online users is the same, for at most
        ROSTER_TTL_S, or until a status or profile changes here (`forget_roster`). Changes made
        meanwhile on other instances also reach the new socket as events: it is in `all_users`
        before the list is built.
        """
        ids = tuple(sorted(int(member) for member in self.tally.members(SCOPE))[:MAX_ONLINE_LIST])
        if not ids:
            return []
        now = time.monotonic()
        cached = self._roster
        if cached is not None and cached[0] == ids and now - cached[1] < ROSTER_TTL_S:
            return cached[2]
        rows = db.session.execute(
            select(User.id, User.username, User.display_name, User.role, User.department, User.status,
                   User.last_seen_at)
            .where(User.id.in_(ids), User.status != "offline", User.role != "banned")
            .order_by(User.username)
        ).all()
        roster = []
        for user_id, username, display_name, role, department, status, last_seen_at in rows:
            last_seen = isoformat(last_seen_at)
            info = {"id": str(user_id), "username": username, "displayName": display_name, "role": role,
                    "department": department, "status": status, "lastSeen": last_seen}
            roster.append({"userId": str(user_id), "userInfo": info, "status": status, "lastSeen": last_seen})
        self._roster = (ids, now, roster)
        return roster

    def forget_roster(self) -> None:
        """A status or profile changed here: the next online list is read afresh."""
        self._roster = None

    def is_online(self, user_id: int) -> bool:
        return str(user_id) in self.tally.members(SCOPE)

    @staticmethod
    def user_info(user: User) -> dict[str, Any]:
        """What `user_online` and `online_users` carry about a user."""
        return user.public_dict()

    # -- helpers --------------------------------------------------------------------

    def _write_activity(self, user_id: int, now: float) -> None:
        with self._lock:
            self._stored[user_id] = now
            self._seen_here[user_id] = now
        self.store.touch(user_id, now)

    def _announce_status(self, user_id: int, status: str, now: float | None) -> None:
        user = self._save(user_id, status=status, last_seen=now)
        if user is not None:
            broadcast.emit_after_commit(
                db.session,
                events.USER_UPDATED,
                {"userId": str(user_id), "status": status, "lastSeen": isoformat(user.last_seen_at)},
                room=events.ALL_USERS_ROOM,
            )
        db.session.commit()

    def _save(self, user_id: int, *, status: str, last_seen: float | None) -> User | None:
        self.forget_roster()
        user = db.session.get(User, user_id)
        if user is None:
            return None
        user.status = status
        if last_seen is not None:
            user.last_seen_at = _dt(last_seen)
        return user
