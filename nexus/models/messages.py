"""Chat messages: in a room, or direct to one user."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from nexus.extensions import db
from nexus.models._types import UTCDateTime, utcnow

MESSAGE_TYPES = ("text", "image", "file")


class Message(db.Model):
    """A persisted message; exactly one of room_id and recipient_id is set."""

    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint("(room_id IS NULL) <> (recipient_id IS NULL)", name="ck_messages_target"),
        CheckConstraint("type IN ('text', 'image', 'file')", name="ck_messages_type"),
        Index("ix_messages_room_id_id", "room_id", "id"),
        Index("ix_messages_recipient_id_id", "recipient_id", "id"),
        Index("ix_messages_sender_id_id", "sender_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    room_id: Mapped[int | None] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    recipient_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    sender_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(16), default="text")
    content: Mapped[str] = mapped_column(Text)
    client_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
