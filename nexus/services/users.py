"""Accounts: creation, lookup and credential checks."""
from __future__ import annotations

import functools
import secrets
from typing import Any

from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from nexus.errors import NexusError
from nexus.extensions import db
from nexus.models import User
from nexus.schemas import load
from nexus.schemas.users import UserCreateSchema


@functools.cache
def _dummy_hash() -> str:
    # Checked against when the username does not exist, so both paths cost the same.
    return generate_password_hash(secrets.token_urlsafe(16))


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
        password_hash=generate_password_hash(data["password"]),
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
    user = db.session.get(User, user_id)
    if user is None:
        raise NexusError("USER_NOT_FOUND")
    return user


def verify_credentials(username: str, password: str) -> User:
    """The account these credentials open; INVALID_CREDENTIALS or USER_BANNED otherwise."""
    user = find_by_username(username)
    if user is None:
        check_password_hash(_dummy_hash(), password)
        raise NexusError("INVALID_CREDENTIALS")
    if not check_password_hash(user.password_hash, password):
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
