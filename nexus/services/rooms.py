"""Rooms: who may join, standing and live membership, room information and unread counts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import bindparam, case, func, select, update
from sqlalchemy.exc import IntegrityError

from nexus.errors import NexusError
from nexus.extensions import db
from nexus.models import Room, RoomMembership, User
from nexus.realtime import broadcast, events
from nexus.schemas import MAX_ID
from nexus.stores.live_rooms import LiveRooms


@dataclass(frozen=True)
class Actor:
    """Who is acting: a user, or a guest socket."""

    user_id: int | None
    role: str = "guest"
    username: str | None = None
    display_name: str | None = None
    guest_key: str | None = None

    @property
    def is_guest(self) -> bool:
        return self.user_id is None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def member_key(self) -> str:
        """How live membership counts this actor: once per user, once per guest socket."""
        return f"u:{self.user_id}" if self.user_id is not None else f"g:{self.guest_key}"

    def public(self) -> dict[str, Any]:
        if self.user_id is None:
            return {"id": None, "guest": True, "name": "Guest"}
        return {
            "id": str(self.user_id),
            "username": self.username,
            "displayName": self.display_name,
            "name": self.display_name or self.username,
            "guest": False,
        }


def check_joinable_name(name: str) -> None:
    """Refuse the names of rooms the server manages."""
    if events.is_reserved_room(name) or name.lower().startswith("dm"):
        raise NexusError("FORBIDDEN", f"{name!r} is managed by the server and cannot be joined by name.")


def find_room(name: str) -> Room:
    """The room with this name; ROOM_NOT_FOUND otherwise."""
    room = db.session.scalar(select(Room).where(Room.name == name))
    if room is None or room.kind == "direct":
        raise room_not_found(name)
    return room


def get_room(room_id: int) -> Room:
    room = db.session.get(Room, room_id) if 0 < room_id <= MAX_ID else None
    if room is None or room.kind == "direct":
        raise NexusError("ROOM_NOT_FOUND")
    return room


def membership(room: Room, user_id: int | None) -> RoomMembership | None:
    if user_id is None:
        return None
    return db.session.scalar(
        select(RoomMembership).where(RoomMembership.room_id == room.id, RoomMembership.user_id == user_id)
    )


def can_read(actor: Actor, room: Room) -> bool:
    """Public rooms are readable by users (and guests, where allowed); others by members and admins."""
    if room.kind == "public":
        return True
    return actor.is_admin or membership(room, actor.user_id) is not None


def require_member(actor: Actor, room: Room) -> RoomMembership | None:
    """FORBIDDEN unless the actor may take part in the room (send, read history)."""
    member = None if actor.is_guest else membership(room, actor.user_id)
    refusal = participation_refusal(actor, room.kind, is_member=member is not None)
    if refusal is not None:
        raise refusal
    return member


def participation_refusal(actor: Actor, kind: str, *, is_member: bool) -> NexusError | None:
    """Why the actor may not take part in a room of this kind (send, read history), or None: a public
    room takes everyone (guests included), any other its members and admins."""
    if actor.is_guest:
        return None if kind == "public" else NexusError("FORBIDDEN", "Guests cannot take part in this room.")
    if is_member or kind == "public" or actor.is_admin:
        return None
    return NexusError("FORBIDDEN", "Only members can take part in this room.")


def room_not_found(name: str) -> NexusError:
    return NexusError("ROOM_NOT_FOUND", f"No room {name!r}.")


def join(actor: Actor, name: str, *, auto_create: bool, guests_can_chat: bool, kind: str | None = None) -> Room:
    """Check that the actor may join a room (creating it on first join, owned by the actor); records
    membership. `kind` ("public" or "private") is what the caller asks for: a room this join creates
    is of that kind (public when not given), and an existing room of the other kind is refused with
    CONFLICT, never joined as if it were the kind asked."""
    check_joinable_name(name)
    if actor.is_guest and not guests_can_chat:
        raise NexusError("FORBIDDEN", "Guests cannot join rooms; authenticate first.")
    room = db.session.scalar(select(Room).where(Room.name == name))
    if room is None:
        if not auto_create or actor.is_guest:
            raise NexusError("ROOM_NOT_FOUND", f"No room {name!r}.")
        # Another join may make the room at the same moment: _create then returns that one, and its
        # kind is checked below like any existing room's.
        room = _create(name, kind or "public", owner_id=actor.user_id, topic=None)
    if room.kind == "private" and not can_read(actor, room):
        raise NexusError("FORBIDDEN", "This room is private; ask its owner or an admin to add you.")
    if kind is not None and room.kind != kind:
        raise NexusError("CONFLICT", f"{name!r} is a {room.kind} room, not a {kind} one; join it without "
                                     f"`kind`, or pick another name.", details={"kind": room.kind})
    if room.kind == "public" and not actor.is_guest and membership(room, actor.user_id) is None:
        _add_membership(room, actor.user_id, "member")
    return room


def create(actor: Actor, name: str, kind: str, topic: str | None) -> Room:
    """A new room owned by the actor (CONFLICT if the name is taken)."""
    if actor.is_guest:
        raise NexusError("UNAUTHORIZED")
    check_joinable_name(name)
    if db.session.scalar(select(Room.id).where(Room.name == name)) is not None:
        raise NexusError("CONFLICT", f"A room named {name!r} exists.")
    return _create(name, kind, owner_id=actor.user_id, topic=topic)


def add_member(actor: Actor, room: Room, user_id: int) -> RoomMembership:
    """Owner or admin adds a member (idempotent); a member removed a moment ago may join again at once."""
    _require_owner_or_admin(actor, room)
    if db.session.get(User, user_id) is None:
        raise NexusError("USER_NOT_FOUND")
    member = membership(room, user_id) or _add_membership(room, user_id, "member")
    control = access_control()
    if control is not None:
        control.restore(user_id, room.name)
    return member


def remove_member(actor: Actor, room: Room, user_id: int) -> int:
    """Owner or admin removes a member (the owner cannot be removed); returns the room's last seq
    before the removal.

    The member's sockets leave the room on every instance before the removal commits (see
    nexus.realtime.control): the room's row is locked first, as sending a message does to take
    its seq, so every message with a seq above the returned one is committed after the removal
    and never reaches the removed member.
    """
    _require_owner_or_admin(actor, room)
    member = membership(room, user_id)
    if member is None:
        raise NexusError("NOT_FOUND", "That user is not a member.")
    if member.role == "owner":
        raise NexusError("CONFLICT", "The owner cannot be removed.")
    try:
        last_seq = db.session.execute(
            update(Room).where(Room.id == room.id).values(last_seq=Room.last_seq).returning(Room.last_seq)
        ).scalar_one()
        db.session.delete(member)
        db.session.flush()
        control = access_control()
        if control is not None:
            control.revoke(user_id, "removed", room=room.name, last_seq=last_seq)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return last_seq


def access_control() -> Any:
    """This process's control channel (nexus.realtime.control), which takes sockets out of rooms on
    every instance; None outside a server (a script, a worker)."""
    return current_app.extensions.get("nexus.control") if has_app_context() else None


def visible_rooms(actor: Actor) -> list[tuple[Room, RoomMembership | None]]:
    """Public rooms, and the private rooms the actor is a member of (all of them for admins)."""
    rows = db.session.scalars(select(Room).where(Room.kind != "direct").order_by(Room.name).limit(1000)).all()
    memberships: dict[int, RoomMembership] = {}
    if actor.user_id is not None:
        memberships = {
            m.room_id: m
            for m in db.session.scalars(select(RoomMembership).where(RoomMembership.user_id == actor.user_id))
        }
    return [
        (room, memberships.get(room.id))
        for room in rows
        if room.kind == "public" or actor.is_admin or room.id in memberships
    ]


def count_rooms() -> int:
    """Chat rooms (direct conversations not counted)."""
    return db.session.scalar(select(func.count()).select_from(Room).where(Room.kind != "direct")) or 0


def unread_counts(user_id: int) -> dict[str, int]:
    """Messages after the member's last read seq, per chat room (by name)."""
    return {name: count for name, kind, count in _unread_rows(user_id) if kind != "direct"}


def direct_unread_counts(user_id: int) -> dict[str, int]:
    """Direct messages after the user's last read seq, per conversation (by the other user's id)."""
    return {
        str(other_user(name, user_id)): count for name, kind, count in _unread_rows(user_id) if kind == "direct"
    }


def unread_summary(user_id: int) -> tuple[dict[str, int], dict[str, int]]:
    """`unread_counts` and `direct_unread_counts` together, from one query (what a new connection is told)."""
    in_rooms: dict[str, int] = {}
    direct: dict[str, int] = {}
    for name, kind, count in _unread_rows(user_id):
        if kind == "direct":
            direct[str(other_user(name, user_id))] = count
        else:
            in_rooms[name] = count
    return in_rooms, direct


def other_user(direct_room_name: str, user_id: int) -> int:
    """The other participant of a direct conversation room `dm:<low>:<high>` (oneself for a note to self)."""
    low, high = (int(part) for part in direct_room_name.split(":")[1:3])
    return high if low == user_id else low


def conversations(actor: Actor, limit: int = 200) -> list[dict[str, Any]]:
    """The actor's direct conversations, most recently started first, with the other user and unread count."""
    if actor.is_guest:
        raise NexusError("FORBIDDEN", "Guests have no direct messages.")
    rows = db.session.execute(
        select(Room, RoomMembership.last_read_seq)
        .join(RoomMembership, RoomMembership.room_id == Room.id)
        .where(Room.kind == "direct", RoomMembership.user_id == actor.user_id)
        .order_by(Room.id.desc())
        .limit(limit)
    ).all()
    others = {room.id: other_user(room.name, actor.user_id) for room, _ in rows}
    users = {u.id: u for u in db.session.scalars(select(User).where(User.id.in_(set(others.values()))))}
    return [
        {
            "with": users[others[room.id]].public_dict() if others[room.id] in users else None,
            "lastSeq": room.last_seq,
            "lastReadSeq": read,
            "unread": max(0, room.last_seq - read),
            "createdAt": room.summary()["createdAt"],
        }
        for room, read in rows
    ]


def _unread_rows(user_id: int) -> list[tuple[str, str, int]]:
    rows = db.session.execute(
        select(Room.name, Room.kind, Room.last_seq - RoomMembership.last_read_seq)
        .join(RoomMembership, RoomMembership.room_id == Room.id)
        .where(RoomMembership.user_id == user_id, Room.last_seq > RoomMembership.last_read_seq)
    )
    return [(name, kind, int(count)) for name, kind, count in rows]


def mark_read(actor: Actor, room: Room, seq: int) -> int:
    """Move the member's read marker forward (never back); returns it.

    The marker is moved in the database (`max(marker, seq)` in one UPDATE), never read and written
    back: a message the member sends at the same moment moves it too (advance_read_markers), and
    neither may undo the other."""
    member = require_member(actor, room)
    if member is None:
        if actor.is_guest:
            raise NexusError("FORBIDDEN", "Guests have no read markers.")
        member = _add_membership(room, actor.user_id, "member")
    target = min(seq, room.last_seq)
    marker = db.session.execute(
        update(RoomMembership)
        .where(RoomMembership.id == member.id)
        .values(last_read_seq=_at_least(target))
        .returning(RoomMembership.last_read_seq)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    db.session.commit()
    return marker


def advance_read_markers(markers: dict[tuple[int, int], int]) -> None:
    """Move read markers forward to the given seqs, {(room id, user id): seq}, never back, in the
    caller's transaction (memberships that do not exist are left alone): one cached statement,
    executed once per marker in one batch (the driver pipelines them), in key order.

    Sending a message calls it with the sender's new message, in the transaction that stores the
    message: what a user sent is read for them (their unread counts come from the room's last seq
    less this marker), and so is what came before it, which their socket in the room received first."""
    if not markers:
        return
    db.session.execute(_ADVANCE_MARKER, [{"room": room_id, "user": user_id, "seq": seq}
                                         for (room_id, user_id), seq in sorted(markers.items())])


_MEMBERSHIPS = RoomMembership.__table__
#: Core (not ORM) so that a list of parameters is one executemany with one compiled statement.
_ADVANCE_MARKER = (
    update(_MEMBERSHIPS)
    .where(_MEMBERSHIPS.c.room_id == bindparam("room"), _MEMBERSHIPS.c.user_id == bindparam("user"),
           _MEMBERSHIPS.c.last_read_seq < bindparam("seq"))
    .values(last_read_seq=bindparam("seq"))
)


def _at_least(seq: int) -> Any:
    """The marker column moved up to `seq` if it is below it (portable GREATEST)."""
    return case((RoomMembership.last_read_seq < seq, seq), else_=RoomMembership.last_read_seq)


def info(actor: Actor, room: Room, live: "LiveMembership") -> dict[str, Any]:
    """Name, kind, members with their status, member count, creation time."""
    if not can_read(actor, room):
        raise NexusError("FORBIDDEN", "This room is private.")
    members = db.session.execute(
        select(User, RoomMembership.role)
        .join(RoomMembership, RoomMembership.user_id == User.id)
        .where(RoomMembership.room_id == room.id)
        .order_by(User.username)
        .limit(500)
    ).all()
    online = live.members(room.name)
    member_count = db.session.scalar(
        select(func.count()).select_from(RoomMembership).where(RoomMembership.room_id == room.id)
    )
    return {
        **room.summary(),
        "members": [
            {**user.public_dict(), "memberRole": role, "inRoom": f"u:{user.id}" in online} for user, role in members
        ],
        "memberCount": member_count,
        "liveMemberCount": len(online),
    }


class LiveMembership:
    """Sockets in rooms now; announces a member's first arrival and last departure."""

    def __init__(self, store: LiveRooms):
        self.store = store

    def entered(self, actor: Actor, room: str, sid: str) -> int:
        """Record a socket in a room; `room_joined` to the others if it is the member's first."""
        first = self.store.add(room, actor.member_key, sid)
        count = len(self.store.members(room))
        if first:
            broadcast.emit(
                events.ROOM_JOINED,
                {"roomId": room, "room": room, "user": actor.public(), "memberCount": count},
                room=room,
                skip_sid=sid,
            )
        return count

    def left(self, actor: Actor, room: str, sid: str) -> int:
        """Forget a socket in a room; `room_left` to the others if it was the member's last."""
        last = self.store.remove(room, actor.member_key, sid)
        count = len(self.store.members(room))
        if last:
            broadcast.emit(
                events.ROOM_LEFT,
                {"roomId": room, "room": room, "user": actor.public(), "memberCount": count},
                room=room,
                skip_sid=sid,
            )
        return count

    def announce_gone(self, gone: list[tuple[str, str]]) -> None:
        """Members whose last sockets in rooms were on an instance that died: `room_left` for each."""
        for scope, member in gone:
            room = scope.removeprefix("room:")
            user_id = int(member[2:]) if member.startswith("u:") and member[2:].isascii() and member[2:].isdigit() else None
            user = db.session.get(User, user_id) if user_id is not None else None
            actor = Actor(user_id=user_id, role=user.role if user else "guest",
                          username=user.username if user else None,
                          display_name=user.display_name if user else None)
            broadcast.emit(
                events.ROOM_LEFT,
                {"roomId": room, "room": room, "user": actor.public(), "memberCount": len(self.store.members(room))},
                room=room,
            )

    def rooms_of(self, sid: str) -> set[str]:
        return self.store.rooms_of(sid)

    def members(self, room: str) -> set[str]:
        return self.store.members(room)

    def has_socket(self, room: str, sid: str) -> bool:
        return self.store.has_socket(room, sid)


def _create(name: str, kind: str, *, owner_id: int | None, topic: str | None) -> Room:
    room = Room(name=name, kind=kind, owner_id=owner_id, topic=topic)
    db.session.add(room)
    try:
        db.session.flush()
    except IntegrityError:  # created by someone else a moment ago
        db.session.rollback()
        return db.session.scalar(select(Room).where(Room.name == name))
    if owner_id is not None:
        db.session.add(RoomMembership(room_id=room.id, user_id=owner_id, role="owner"))
    db.session.commit()
    return room


def _add_membership(room: Room, user_id: int, role: str) -> RoomMembership:
    member = RoomMembership(room_id=room.id, user_id=user_id, role=role)
    db.session.add(member)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        member = membership(room, user_id)
    return member


def _require_owner_or_admin(actor: Actor, room: Room) -> None:
    if actor.is_admin:
        return
    member = membership(room, actor.user_id)
    if member is None or member.role != "owner":
        raise NexusError("FORBIDDEN", "Only the room's owner or an admin can do this.")
