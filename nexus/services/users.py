"""Accounts: creation, lookup, credential checks, search and profile updates."""
from __future__ import annotations

import functools
import os
import secrets
from typing import Any, Callable, Iterable, TypeVar

from flask import current_app
from sqlalchemy import func, or_, select
from werkzeug.security import check_password_hash, generate_password_hash

from nexus.errors import NexusError
from nexus.extensions import db
from nexus.models import ROLES, Room, RoomMembership, User
from nexus.realtime import broadcast, events
from nexus.schemas import MAX_ID, load
from nexus.schemas.users import UserCreateSchema
from nexus.services import tokens
from nexus.services.rooms import Actor, access_control

# Profile fields a user may change on their own account, and their public (wire) names.
EDITABLE_PROFILE_FIELDS = {"display_name": "displayName", "department": "department"}
_LIKE_ESCAPE = "\\"


_T = TypeVar("_T")
# Password hashing is CPU-bound (scrypt, about 100 ms): at most this many run at once, off the loop.
HASHING_THREADS = max(1, min(4, os.cpu_count() or 1))
_hashing_pool: Any = None
_hashing_pool_pid = 0


def _off_the_loop(function: Callable[..., _T], *args: Any) -> _T:
    """Run a password hash in a native thread when gevent runs the server, so every other connection
    keeps being served meanwhile (hashlib releases the GIL); in a plain thread, run it right here."""
    from gevent import monkey

    if not monkey.is_module_patched("threading"):
        return function(*args)
    global _hashing_pool, _hashing_pool_pid
    # A pool of its own (gevent's default one also resolves host names), made in the serving process:
    # a pool inherited through fork has no threads.
    if _hashing_pool is None or _hashing_pool_pid != os.getpid():
        from gevent.threadpool import ThreadPool

        _hashing_pool, _hashing_pool_pid = ThreadPool(HASHING_THREADS), os.getpid()
    return _hashing_pool.apply(function, args)


def hash_password(password: str) -> str:
    """The stored form of a password (werkzeug's scrypt), computed off the event loop."""
    return _off_the_loop(generate_password_hash, password)


def password_matches(stored_hash: str, password: str) -> bool:
    """Whether a password matches its stored form, checked off the event loop."""
    return _off_the_loop(check_password_hash, stored_hash, password)


@functools.cache
def _dummy_hash() -> str:
    # Checked against when the username does not exist, so both paths cost the same.
    return hash_password(secrets.token_urlsafe(16))


def create_user(
    username: str,
    password: str,
    *,
    role: str = "user",
    display_name: str | None = None,
    department: str | None = None,
) -> User:
    """Create an account; VALIDATION_ERROR for bad fields, CONFLICT for a taken username."""
    data: dict[str, Any] = load(
        UserCreateSchema(),
        {"username": username, "password": password, "role": role, "department": department}
        | ({"displayName": display_name} if display_name else {}),
    )
    name = data["username"].lower()
    if find_by_username(name) is not None:
        raise NexusError("CONFLICT", f"The username {name!r} is taken.")
    user = User(
        username=name,
        display_name=data.get("display_name") or data["username"],
        password_hash=hash_password(data["password"]),
        role=data["role"],
        department=data.get("department"),
    )
    db.session.add(user)
    db.session.commit()
    return user


def find_by_username(username: str) -> User | None:
    """The account with this username (case-insensitive), if any."""
    return db.session.scalar(select(User).where(User.username == username.strip().lower()))


def get_user(user_id: int) -> User:
    """The account with this id; USER_NOT_FOUND otherwise."""
    user = db.session.get(User, user_id) if 0 < user_id <= MAX_ID else None
    if user is None:
        raise NexusError("USER_NOT_FOUND")
    return user


def verify_credentials(username: str, password: str) -> User:
    """The account these credentials open; INVALID_CREDENTIALS or USER_BANNED otherwise."""
    user = find_by_username(username)
    if user is None:
        password_matches(_dummy_hash(), password)
        raise NexusError("INVALID_CREDENTIALS")
    if not password_matches(user.password_hash, password):
        raise NexusError("INVALID_CREDENTIALS")
    if user.is_banned:
        raise NexusError("USER_BANNED")
    return user


def ensure_demo_users() -> list[tuple[User, str]]:
    """Create a demo admin and a demo user on an empty database; returns them with their passwords."""
    if db.session.scalar(select(User.id).limit(1)) is not None:
        return []
    created = []
    for username, role, display in (("admin", "admin", "Demo Admin"), ("demo", "user", "Demo User")):
        password = secrets.token_urlsafe(12)
        created.append((create_user(username, password, role=role, display_name=display), password))
    return created


def visible_user(viewer: Actor, user_id: int) -> User:
    """The account with this id as the viewer may see it; USER_NOT_FOUND too for a banned one, except to admins."""
    user = get_user(user_id)
    if user.is_banned and not viewer.is_admin:
        raise NexusError("USER_NOT_FOUND")
    return user


def search(viewer: Actor, q: str, *, limit: int, cursor: str | None = None) -> dict[str, Any]:
    """A page of users whose username or display name contains q (any case, every character literal)."""
    # Keyset pagination on the unique username: the page after `cursor` in username order,
    # so pages never overlap or skip, even while accounts are added between requests.
    query = select(User).order_by(User.username).limit(limit + 1)
    if q:
        pattern = f"%{like_escape(q)}%"
        matches = [column.ilike(pattern, escape=_LIKE_ESCAPE) for column in (User.username, User.display_name)]
        query = query.where(or_(*matches))
    if not viewer.is_admin:
        query = query.where(User.role != "banned")
    if cursor:
        query = query.where(User.username > cursor)
    rows = list(db.session.scalars(query))
    page, more = rows[:limit], len(rows) > limit
    return {
        "users": [user.public_dict() for user in page],
        "nextCursor": page[-1].username if more else None,
        "hasMore": more,
        "limit": limit,
    }


def like_escape(text: str) -> str:
    """Text for a LIKE pattern in which %, _ and the escape character itself match only themselves."""
    for char in (_LIKE_ESCAPE, "%", "_"):  # the escape character first, or its own escapes would double
        text = text.replace(char, _LIKE_ESCAPE + char)
    return text


def update_profile(user_id: int, changes: dict[str, Any]) -> User:
    """Apply validated profile changes (display_name, department), commit, then announce them in `user_update`."""
    refused = set(changes) - set(EDITABLE_PROFILE_FIELDS)
    if refused:
        raise NexusError("VALIDATION_ERROR", f"These fields cannot be changed: {', '.join(sorted(refused))}.")
    user = get_user(user_id)
    changed = {name: value for name, value in changes.items() if getattr(user, name) != value}
    for name, value in changed.items():
        setattr(user, name, value)
    # A new department is not applied to the user's live sockets (their `department_<name>`
    # room is joined on connect): they pick up the new department on their next connection.
    if changed:
        _refresh_live_sessions(user)
        public = user.public_dict()
        data = {wire: public[wire] for name, wire in EDITABLE_PROFILE_FIELDS.items() if name in changed}
        broadcast.emit_after_commit(
            db.session, events.USER_UPDATE, {"userId": str(user.id), "data": data}, room=events.ALL_USERS_ROOM
        )
        _roster_changed()
    db.session.commit()
    if changed:
        tokens.forget_identities(user_id=user_id)  # sockets that connect from now on read the new profile
    return user


def set_role(
    actor: Actor, user_id: int, role: str, *, before_commit: Callable[[User], None] | None = None
) -> User:
    """An admin changes a user's role ("banned" bans them); never their own role. `before_commit`
    runs inside the transaction, with the new role set (it may raise to roll the change back)."""
    if not actor.is_admin:
        raise NexusError("FORBIDDEN", "Administrators only.")
    if role not in ROLES:
        raise NexusError("VALIDATION_ERROR", f"role: must be one of {', '.join(ROLES)}.")
    if user_id == actor.user_id:
        raise NexusError("CONFLICT", "Administrators cannot change their own role.")
    user = get_user(user_id)
    user.role = role
    _roster_changed()
    if before_commit is not None:
        before_commit(user)
    db.session.commit()
    tokens.forget_identities(user_id=user_id)  # a ban refuses, and a new role holds, on every instance
    return user


def _refresh_live_sessions(user: User) -> None:
    """This instance's sockets of the user send under the new display name from now on."""
    sessions = current_app.extensions.get("nexus.sessions")
    if sessions is None:
        return
    for sid in list(sessions.sids_of_user(user.id)):
        session = sessions.get(sid)
        if session is not None:
            session.display_name = user.display_name


def _roster_changed() -> None:
    """The online list carries roles and profiles: read it afresh after a change (nexus.services.presence)."""
    presence = current_app.extensions.get("nexus.presence")
    if presence is not None:
        presence.forget_roster()


def change_role(actor: Actor, user_id: int, role: str, *, disconnect: Callable[[int, str], int]) -> User:
    """set_role, then close the user's sockets where the new role must hold at once (a ban, a demotion).

    Before the change commits, the user's sockets leave every room the new role no longer lets
    them read, on every instance (see nexus.realtime.control): every room for a ban; for an
    administrator who is one no more, the rooms they are not a member of (private rooms they
    read as an administrator). No message committed after the change reaches them there.
    """
    previous = db.session.get(User, user_id)
    before = previous.role if previous is not None else None

    def revoke(user: User) -> None:
        control = access_control()
        if control is None:
            return
        if role == "banned" and before != "banned":
            control.revoke(user.id, "banned", role=role)
        elif before == "admin" and role != "admin":
            keep = db.session.scalars(
                select(Room.name).join(RoomMembership, RoomMembership.room_id == Room.id)
                .where(RoomMembership.user_id == user.id)
            ).all()
            control.revoke(user.id, "role_changed", keep=list(keep), role=role)

    try:
        user = set_role(actor, user_id, role, before_commit=revoke)
    except BaseException:
        db.session.rollback()
        raise
    if role == "banned":
        disconnect(user_id, "banned")
    elif before in ("admin", "moderator") and role != before:
        # Sockets keep the role they connected with: a demoted user reconnects with the new one.
        disconnect(user_id, "role changed; reconnect")
    return user


def unban(actor: Actor, user_id: int) -> User:
    """An admin lifts a ban: the account becomes a plain user again; CONFLICT if it was not banned."""
    if not actor.is_admin:
        raise NexusError("FORBIDDEN", "Administrators only.")
    if get_user(user_id).role != "banned":
        raise NexusError("CONFLICT", "This account is not banned.")
    return set_role(actor, user_id, "user")


def count_users(*, role: str | None = None, department: str | None = None, include_banned: bool = False) -> int:
    """How many accounts have this role and department (banned ones left out unless asked for)."""
    query = select(func.count()).select_from(User)
    if role is not None:
        query = query.where(User.role == role)
    elif not include_banned:
        query = query.where(User.role != "banned")
    if department is not None:
        query = query.where(User.department == department)
    return db.session.scalar(query) or 0


def departments(limit: int = 200) -> list[str]:
    """The departments accounts belong to, in name order."""
    query = select(User.department).where(User.department.is_not(None)).distinct().order_by(User.department)
    return list(db.session.scalars(query.limit(limit)))


def usernames(user_ids: Iterable[int]) -> dict[int, str]:
    """The usernames of some accounts, in one query: {id: username} (unknown ids left out)."""
    wanted = {user_id for user_id in user_ids if isinstance(user_id, int)}
    if not wanted:
        return {}
    rows = db.session.execute(select(User.id, User.username).where(User.id.in_(wanted)))
    return {user_id: username for user_id, username in rows}
