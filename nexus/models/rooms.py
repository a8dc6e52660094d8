"""Chat rooms (public, private, and the direct conversation of two users) and their memberships."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from nexus.extensions import db
from nexus.models._types import UTCDateTime, isoformat, utcnow

ROOM_KINDS = ("public", "private", "direct")


class Room(db.Model):
    """A named chat room; `last_seq` numbers its messages 1, 2, 3, ..."""

    __tablename__ = "rooms"
    __table_args__ = (CheckConstraint("kind IN ('public', 'private', 'direct')", name="ck_rooms_kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="public")
    topic: Mapped[str | None] = mapped_column(String(255))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    last_seq: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def summary(self) -> dict:
        """Name, kind and creation time, as clients see them."""
        return {
            "id": str(self.id),
            "roomId": self.name,
            "name": self.name,
            "kind": self.kind,
            "topic": self.topic,
            "ownerId": None if self.owner_id is None else str(self.owner_id),
            "lastSeq": self.last_seq,
            "createdAt": isoformat(self.created_at),
        }


class RoomMembership(db.Model):
    """A user's standing membership of a room, with the last message seq they have read."""

    __tablename__ = "room_memberships"
    __table_args__ = (
        UniqueConstraint("room_id", "user_id", name="uq_room_memberships_room_user"),
        CheckConstraint("role IN ('owner', 'member')", name="ck_room_memberships_role"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16), default="member")
    last_read_seq: Mapped[int] = mapped_column(default=0)
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
