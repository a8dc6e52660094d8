"""Chat rooms and their memberships."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from nexus.extensions import db
from nexus.models._types import UTCDateTime, utcnow

ROOM_KINDS = ("public", "private")


class Room(db.Model):
    """A named chat room, public or private."""

    __tablename__ = "rooms"
    __table_args__ = (CheckConstraint("kind IN ('public', 'private')", name="ck_rooms_kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="public")
    topic: Mapped[str | None] = mapped_column(String(255))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RoomMembership(db.Model):
    """A user's standing membership of a room (for private rooms and the member list)."""

    __tablename__ = "room_memberships"
    __table_args__ = (
        UniqueConstraint("room_id", "user_id", name="uq_room_memberships_room_user"),
        CheckConstraint("role IN ('owner', 'member')", name="ck_room_memberships_role"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16), default="member")
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
