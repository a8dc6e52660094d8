"""Presence: who is online, their status and last seen, the same on every instance.

A user is online while at least one of their sockets is connected, on any instance (the
Tally counts them). The status a user chose (online, away, busy, offline = invisible) is kept
in the PresenceStore while they are connected and for `status_restore_s` after. Activity is
recorded in the store at most every `touch_every_s` per user and in the database at most every
`last_seen_write_s`; a user with no activity for `away_after_s` is shown away until the next one.

Every change others see (online, offline, a status, away) raises the user's version in the shared
store, in the same atomic step as the socket count that decided it (or right after a status change,
the status then read back), and every `user_online`, `user_offline`, `user_updated` and
`online_users` entry carries it: a receiver keeps the highest version per user and drops older
ones, whatever order the instances' announcements arrive in. A version is announced with one state
only: a repair (`settle`, `reconcile`, a reaped instance's users) takes a new version in the same
step as it reads who is present, never one an earlier announcement may have used for the other
state. `users.status` is written with its version (`users.presence_version`) and a write from an
older version changes nothing, so the database ends on the newest decision whatever order the
instances commit in. The periodic `reconcile` repairs what a crash left behind, in both directions.
The announcements are durable (with a message queue they are written to the outbox with the status
they report), so an instance that dies between writing a status and publishing it does not leave
clients believing the old one.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from threading import Lock
from typing import Any, Callable, Iterable

from sqlalchemy import bindparam, case, func, or_, select, update

from nexus.config import Config
from nexus.errors import NexusError
from nexus.extensions import db
from nexus.models import User, isoformat
from nexus.realtime import broadcast, events
from nexus.services import reads
from nexus.services.batching import Batcher, SharedRead
from nexus.services.rooms import Actor
from nexus.stores.base import PresenceStore, Tally

log = logging.getLogger("nexus.presence")

SCOPE = "presence"
STATUSES = ("online", "away", "busy", "offline")
PRESENCE_EVENTS = frozenset({events.USER_ONLINE, events.USER_OFFLINE, events.USER_UPDATED})
MAX_ONLINE_LIST = 1000
ROSTER_TTL_S = 1.0
RECONCILE_CHUNK = 1000
RECONCILE_ANNOUNCE_MAX = 1000


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def shown_status(present: bool, chosen: str | None, away: bool) -> str:
    """The status others see: offline without a socket anywhere, else the chosen one (away after
    inactivity for users who chose to be online)."""
    if not present:
        return "offline"
    status = chosen or "online"
    return "away" if away and status == "online" else status


def with_events(listed: list[dict[str, Any]], seen: list[tuple[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """An online list (`Presence.online_users`) with the presence events that went out while it was
    read applied where newer than its entries, and whether every one could be (a status change of
    a user the list does not have carries no profile to list them with)."""
    if not seen:
        return listed, True
    entries = {entry["userId"]: entry for entry in listed}
    complete = True
    for event, data in seen:
        if event not in PRESENCE_EVENTS or not isinstance(data, dict):
            continue
        user_id, version = data.get("userId"), data.get("version")
        current = entries.get(user_id)
        if version is None or (current is not None and current["version"] >= version):
            continue
        if event == events.USER_OFFLINE or (event == events.USER_UPDATED and data.get("status") == "offline"):
            entries.pop(user_id, None)
        elif event == events.USER_ONLINE:
            info = data["userInfo"]
            entries[user_id] = {"userId": user_id, "userInfo": info, "status": info["status"],
                                "lastSeen": info["lastSeen"], "version": version}
        elif current is not None:
            status = data["status"]
            entries[user_id] = {**current, "status": status, "lastSeen": data.get("lastSeen"), "version": version,
                                "userInfo": {**current["userInfo"], "status": status, "lastSeen": data.get("lastSeen")}}
        else:
            complete = False
    ordered = sorted(entries.values(), key=lambda entry: entry["userInfo"]["username"])
    return ordered, complete


@dataclass(frozen=True, slots=True)
class _CameOnline:
    user_id: int
    status: str
    at: float
    version: int
    skip_sid: str | None


@dataclass(frozen=True, slots=True)
class _WentOffline:
    user_id: int
    at: float | None  # their last activity (None: unknown, the database keeps the last one written)
    version: int
    visible: bool


def _write_if_newer(session: Any, *, status: Any, last_seen: Any, rows: list[dict[str, Any]]) -> None:
    """One UPDATE of users for many rows ({"user", "version", ...}): each user's status and presence
    version are written only from a newer version than the one stored (as `_save` does for one user);
    `status` and `last_seen` are the SQL expressions of the new values."""
    users = User.__table__
    newer = or_(users.c.presence_version.is_(None), users.c.presence_version < bindparam("version"))
    session.execute(
        users.update()
        .where(users.c.id == bindparam("user"))
        .values(status=case((newer, status), else_=users.c.status),
                presence_version=case((newer, bindparam("version")), else_=users.c.presence_version),
                last_seen_at=last_seen),
        rows,
    )

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
        self._roster: tuple[tuple[tuple[int, int, str], ...], float, list[dict[str, Any]]] | None = None
        self._online_writes: Batcher[_CameOnline, None] = Batcher(self._write_came_online)
        self._offline_writes: Batcher[_WentOffline, None] = Batcher(self._write_went_offline)
        self._online_reads: SharedRead[list[dict[str, Any]]] = SharedRead(self._read_online_users)

    # -- connections ----------------------------------------------------------------

    def connected(self, actor: Actor, sid: str) -> bool:
        """A socket of the user connected; `user_online` to everyone if it is their first anywhere."""
        user_id = actor.user_id
        if user_id is None:
            return False
        now = self.clock()
        version = self.tally.enter(SCOPE, str(user_id))
        self._write_activity(user_id, now)
        if not version:
            # A new socket is activity: an away user is back (touch would wait for its throttle).
            if self.store.clear_away(user_id) and (self.store.chosen_status(user_id) or "online") == "online":
                self._announce_status(user_id, now)
            return False
        self._came_online(user_id, now, skip_sid=sid, version=version)
        return True

    def disconnected(self, actor: Actor) -> bool:
        """A socket of the user went away; `user_offline` to everyone if it was their last anywhere."""
        user_id = actor.user_id
        if user_id is None:
            return False
        version = self.tally.leave(SCOPE, str(user_id))
        if not version:
            return False
        with self._lock:
            last_seen = self._seen_here.pop(user_id, None) or self.clock()
            self._stored.pop(user_id, None)
            self._last_seen_due.pop(user_id, None)
        # The writes of users going offline at the same moment share one statement and one commit.
        self._offline_writes.submit(self._going_offline(user_id, last_seen, version))
        return True

    def went_offline(
        self, user_ids: Iterable[int], *, last_seen: float | None = None, versions: dict[int, int] | None = None
    ) -> None:
        """Users with no socket left anywhere (their last one closed, or their instance died and was
        reaped); `versions` are those the decisions returned, else the shared store is read."""
        user_ids = list(user_ids)
        versions = dict(versions or {})
        unknown = [user_id for user_id in user_ids if user_id not in versions]
        # Decided elsewhere (a reap): a new version read with who is present now.
        for user_id, (present, version) in zip(unknown, self.tally.restate(SCOPE, [str(u) for u in unknown])):
            if present:  # back on another instance meanwhile: its announcement is the newer one
                continue
            versions[user_id] = version
        gone = [self._going_offline(user_id, last_seen, versions[user_id]) for user_id in user_ids
                if user_id in versions]
        self._write_went_offline(gone)

    def _going_offline(self, user_id: int, last_seen: float | None, version: int) -> _WentOffline:
        """The shared store's part of a user going offline; what the database is to be told."""
        visible = self.store.chosen_status(user_id) != "offline"
        # Unknown when their instance died while they were away: the database keeps the last write.
        seen = last_seen or self.store.last_activity(user_id)
        self.store.remember_status(user_id, self.restore_s)
        self.store.forget_activity(user_id)
        return _WentOffline(user_id, seen, version, visible)

    def _write_went_offline(self, batch: list[_WentOffline]) -> None:
        """Write `offline` for users who went, each under its version (as `_save`), in one statement and
        one commit, then their `user_offline` (for those who were visible). In the caller's session."""
        self.forget_roster()
        session = db.session
        try:
            if batch:
                stored = dict(session.execute(
                    select(User.id, User.last_seen_at).where(User.id.in_({item.user_id for item in batch}))
                ).all())
                # In user order, as every batch: two batches never lock the same rows in opposite orders.
                known = sorted((item for item in batch if item.user_id in stored), key=lambda item: item.user_id)
                if known:
                    _write_if_newer(
                        session, status="offline",
                        last_seen=func.coalesce(bindparam("seen", type_=User.last_seen_at.type),
                                                User.__table__.c.last_seen_at),
                        rows=[{"user": item.user_id, "version": item.version,
                               "seen": None if item.at is None else _dt(item.at)} for item in known],
                    )
                for item in known:
                    if not item.visible:
                        continue
                    last_seen = isoformat(stored[item.user_id] if item.at is None else _dt(item.at))
                    broadcast.emit_after_commit(
                        session,
                        events.USER_OFFLINE,
                        {"userId": str(item.user_id), "lastSeen": last_seen, "version": item.version},
                        room=events.ALL_USERS_ROOM,
                        durable=True,
                    )
            session.commit()
        except BaseException:
            session.rollback()
            raise

    def back_online(self, user_ids: Iterable[int]) -> None:
        """Users whose sockets were presumed gone with a stalled instance that came back: online again."""
        for user_id in user_ids:
            self.settle(user_id)

    def _came_online(self, user_id: int, now: float, *, skip_sid: str | None, version: int) -> None:
        """Restore the user's chosen status, write it and send `user_online` after the commit (unless they
        chose to be invisible). Returns once committed; the writes of users coming online at the same
        moment share one statement and one commit (`Batcher`)."""
        status = self.store.chosen_status(user_id) or "online"
        self.store.choose_status(user_id, status)  # kept while connected (clears a restore expiry)
        self._online_writes.submit(_CameOnline(user_id, status, now, version, skip_sid))

    def _write_came_online(self, batch: list[_CameOnline]) -> None:
        """Write the statuses of users who came online, each under its version (as `_save`), in one
        statement and one commit, then their `user_online`. In the session of the greenlet that writes."""
        self.forget_roster()
        session = db.session
        try:
            profiles = {row[0]: row for row in session.execute(
                select(User.id, User.username, User.display_name, User.role, User.department)
                .where(User.id.in_({item.user_id for item in batch}))
            )}
            # In user order, as every batch: two batches never lock the same rows in opposite orders.
            known = sorted((item for item in batch if item.user_id in profiles), key=lambda item: item.user_id)
            if known:
                _write_if_newer(
                    session, status=bindparam("shown"), last_seen=bindparam("seen"),
                    rows=[{"user": item.user_id, "shown": item.status, "version": item.version, "seen": _dt(item.at)}
                          for item in known],
                )
            for item in known:
                if item.status == "offline":
                    continue
                _, username, display_name, role, department = profiles[item.user_id]
                info = {"id": str(item.user_id), "username": username, "displayName": display_name, "role": role,
                        "department": department, "status": item.status, "lastSeen": isoformat(_dt(item.at))}
                broadcast.emit_after_commit(
                    session,
                    events.USER_ONLINE,
                    {"userId": str(item.user_id), "userInfo": info, "version": item.version},
                    room=events.ALL_USERS_ROOM,
                    skip_sid=item.skip_sid,
                    durable=True,
                )
            session.commit()
        except BaseException:
            session.rollback()
            raise

    # -- convergence ----------------------------------------------------------------

    def settle(self, user_id: int) -> str | None:
        """Write and announce what the shared store says of a user now, under a new version taken
        in the same step as who is present is read. The status written, None for an unknown user."""
        [(present, version)] = self.tally.restate(SCOPE, [str(user_id)])
        # Read after the version: a status changed since then is already in what is read here,
        # and its own (higher) version is announced by whoever changed it.
        chosen, away = self.store.statuses([user_id])[user_id]
        shown = shown_status(present, chosen, away)
        saved = self._save(user_id, status=shown, last_seen=None, version=version)
        if saved is None:
            db.session.commit()
            return None
        if shown == "offline":
            event = events.USER_OFFLINE
            data = {"userId": str(user_id), "lastSeen": saved["lastSeen"], "version": version}
        else:
            event = events.USER_ONLINE
            data = {"userId": str(user_id), "userInfo": saved, "version": version}
        broadcast.emit_after_commit(db.session, event, data, room=events.ALL_USERS_ROOM, durable=True)
        db.session.commit()
        return shown

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
        version = self.tally.bump(SCOPE, str(user_id))
        # Read back once versioned: two tabs choosing at once both announce the one chosen last
        # (the higher version reads at least what the lower one did).
        status = shown_status(True, *self.store.statuses([user_id])[user_id])
        now = self.clock()
        self._write_activity(user_id, now)
        saved = self._save(user_id, status=status, last_seen=now, version=version)
        if saved is None:
            raise NexusError("USER_NOT_FOUND")
        update_event = {"userId": str(user_id), "status": status, "lastSeen": saved["lastSeen"], "version": version}
        session = db.session
        if status == "offline" and was_visible:
            offline = {"userId": str(user_id), "version": version}
            broadcast.emit_after_commit(
                session, events.USER_OFFLINE, offline, room=events.ALL_USERS_ROOM, durable=True
            )
        elif status != "offline" and not was_visible:
            online = {"userId": str(user_id), "userInfo": saved, "version": version}
            broadcast.emit_after_commit(session, events.USER_ONLINE, online, room=events.ALL_USERS_ROOM, durable=True)
        broadcast.emit_after_commit(
            session, events.USER_UPDATED, update_event, room=events.ALL_USERS_ROOM, durable=True
        )
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
            self._announce_status(user_id, now)

    def sweep_away(self, limit: int = 1000) -> list[int]:
        """Show as away the users with no activity for away_after_s (unless they chose another status)."""
        marked = []
        for user_id in self.store.idle_since(self.clock() - self.away_after_s, limit):
            if (self.store.chosen_status(user_id) or "online") != "online":
                self.store.forget_activity(user_id)  # nothing to watch until they are active again
                continue
            if self.store.set_away(user_id):
                self._announce_status(user_id, None)
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
        """Make `users.status` follow the shared store, both ways, announcing each repair: users shown
        present with no socket on any live instance go offline, connected users shown offline (or with
        another status than the one they have) are brought back. The number of users repaired."""
        present = [int(member) for member in self.tally.versioned_members(SCOPE)]
        statuses = self.store.statuses(present)
        expected = {user_id: shown_status(True, *statuses[user_id]) for user_id in present}
        stored = {user_id: (status, seen) for user_id, status, seen in db.session.execute(
            select(User.id, User.status, User.last_seen_at).where(User.status != "offline").limit(10_000)
        )}
        hidden = [user_id for user_id, status in expected.items() if status != "offline" and user_id not in stored]
        for start in range(0, len(hidden), RECONCILE_CHUNK):
            chunk = hidden[start:start + RECONCILE_CHUNK]
            stored.update((user_id, (status, seen)) for user_id, status, seen in db.session.execute(
                select(User.id, User.status, User.last_seen_at).where(User.id.in_(chunk))
            ))
        gone = sorted(user_id for user_id in stored if user_id not in expected)
        wrong = sorted(user_id for user_id in expected if user_id in stored and expected[user_id] != stored[user_id][0])
        if gone:
            self._demote(gone, {user_id: stored[user_id][1] for user_id in gone})
        for user_id in wrong:  # few: one write and announcement each, settled on the shared store
            self.settle(user_id)
        if gone or wrong:
            log.info("reconcile repaired the presence of %d users (%d offline, %d brought back or corrected)",
                     len(gone) + len(wrong), len(gone), len(wrong))
        return len(gone) + len(wrong)

    def _demote(self, user_ids: list[int], last_seen: dict[int, datetime | None]) -> None:
        """Users shown present with no socket anywhere: offline, each under a new version taken as
        their absence is read (one who connected meanwhile is left to that connection's own write
        and announcement, which are newer), announced (a client may have them online from an
        announcement their instance never undid)."""
        announce = len(user_ids) <= RECONCILE_ANNOUNCE_MAX
        if not announce:
            # So many at once is a whole cluster coming back: its clients reconnect and get fresh lists.
            log.warning("reconcile takes %d users offline without announcing each", len(user_ids))
        rows = []
        for start in range(0, len(user_ids), RECONCILE_CHUNK):
            chunk = user_ids[start:start + RECONCILE_CHUNK]
            for user_id, (present, version) in zip(chunk, self.tally.restate(SCOPE, [str(u) for u in chunk])):
                if present:
                    continue
                rows.append({"user": user_id, "version": version})
                if announce:
                    data = {"userId": str(user_id), "lastSeen": isoformat(last_seen[user_id]), "version": version}
                    broadcast.emit_after_commit(
                        db.session, events.USER_OFFLINE, data, room=events.ALL_USERS_ROOM, durable=True
                    )
        if rows:
            users = User.__table__
            db.session.execute(
                users.update()
                .where(users.c.id == bindparam("user"),
                       or_(users.c.presence_version.is_(None), users.c.presence_version < bindparam("version")))
                .values(status="offline", presence_version=bindparam("version")),
                rows,
            )
        db.session.commit()
        self.forget_roster()

    # -- reading --------------------------------------------------------------------

    def online_users(self) -> list[dict[str, Any]]:
        """The users others can see online (invisible ones left out), with status, last seen and version.

        Who is online, their status and their version come from the shared store, read after the
        list is asked for (a new socket is in `all_users` by then, so the list is never older than
        an event it already received). Every new connection gets this list: callers that ask at
        the same moment share one read that began after all of them asked (`SharedRead`; the list
        is shared, never to be changed), the profiles are read with one column query (no ORM
        objects) and they are reused while the online users, their statuses and versions are the
        same, for at most ROSTER_TTL_S, or until a profile changes here (`forget_roster`).
        """
        return self._online_reads.get()

    def _read_online_users(self) -> list[dict[str, Any]]:
        versions = self.tally.versioned_members(SCOPE)
        ids = sorted(int(member) for member in versions)[:MAX_ONLINE_LIST]
        if not ids:
            return []
        statuses = self.store.statuses(ids)
        key = tuple(
            (user_id, versions[str(user_id)], shown)
            for user_id in ids
            if (shown := shown_status(True, *statuses[user_id])) != "offline"
        )
        if not key:
            return []
        now = time.monotonic()
        cached = self._roster
        if cached is not None and cached[0] == key and now - cached[1] < ROSTER_TTL_S:
            return cached[2]
        listed = {user_id: (version, shown) for user_id, version, shown in key}
        with reads.autocommit() as connection:
            rows = connection.execute(
                select(User.id, User.username, User.display_name, User.role, User.department, User.last_seen_at)
                .where(User.id.in_(list(listed)), User.role != "banned")
                .order_by(User.username)
            ).all()
        roster = []
        for user_id, username, display_name, role, department, last_seen_at in rows:
            version, status = listed[user_id]
            last_seen = isoformat(last_seen_at)
            info = {"id": str(user_id), "username": username, "displayName": display_name, "role": role,
                    "department": department, "status": status, "lastSeen": last_seen}
            roster.append({"userId": str(user_id), "userInfo": info, "status": status, "lastSeen": last_seen,
                           "version": version})
        self._roster = (key, now, roster)
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

    def _announce_status(self, user_id: int, now: float | None) -> None:
        """The away mark was set or cleared: `user_updated` with what the store holds once versioned
        (another instance may have undone the change in between, activity there right as the sweep
        here marked the user away)."""
        version = self.tally.bump(SCOPE, str(user_id))  # after the change
        status = shown_status(True, *self.store.statuses([user_id])[user_id])
        saved = self._save(user_id, status=status, last_seen=now, version=version)
        if saved is not None:
            broadcast.emit_after_commit(
                db.session,
                events.USER_UPDATED,
                {"userId": str(user_id), "status": status, "lastSeen": saved["lastSeen"], "version": version},
                room=events.ALL_USERS_ROOM,
            )
        db.session.commit()

    def _save(self, user_id: int, *, status: str, last_seen: float | None, version: int) -> dict[str, Any] | None:
        """Write the status decided under `version` unless one from a newer version is written
        already (in one statement, so concurrent writers settle on the newest whatever order they
        commit in), and the last activity if given. The user's public info as announced, with this
        status; None for an unknown user."""
        self.forget_roster()
        user = db.session.get(User, user_id)
        if user is None:
            return None
        info = self.user_info(user)
        newer = or_(User.presence_version.is_(None), User.presence_version < version)
        values: dict[str, Any] = {
            "status": case((newer, status), else_=User.status),
            "presence_version": case((newer, version), else_=User.presence_version),
        }
        if last_seen is not None:
            values["last_seen_at"] = _dt(last_seen)
            info["lastSeen"] = isoformat(values["last_seen_at"])
        db.session.execute(
            update(User).where(User.id == user_id).values(**values).execution_options(synchronize_session=False)
        )
        db.session.expire(user)  # the loaded row is older than the statement
        info["status"] = status
        return info
