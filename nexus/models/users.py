"""Users: accounts, roles, department and presence fields."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from nexus.extensions import db
from nexus.models._types import UTCDateTime, isoformat, utcnow

ROLES = ("user", "moderator", "admin", "banned")
STATUSES = ("online", "away", "busy", "offline")


class User(db.Model):
    """An account that can log in and connect."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("role IN ('user', 'moderator', 'admin', 'banned')", name="ck_users_role"),
        CheckConstraint("status IN ('online', 'away', 'busy', 'offline')", name="ck_users_status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Stored lower-case: usernames are case-insensitive.
    username: Mapped[str] = mapped_column(String(32), unique=True)
    display_name: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user", index=True)
    department: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="offline")
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The presence version `status` was written from: a write from an older one changes nothing, so
    # the instances' writes land in the order they were decided whatever order they commit in.
    presence_version: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_banned(self) -> bool:
        return self.role == "banned"

    def public_dict(self) -> dict[str, Any]:
        """What other users may see of this user."""
        return {
            "id": str(self.id),
            "username": self.username,
            "displayName": self.display_name,
            "role": self.role,
            "department": self.department,
            "status": self.status,
            "lastSeen": isoformat(self.last_seen_at),
        }
