"""Chat messages: every message belongs to a room (a direct conversation is a room of two)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from nexus.extensions import db
from nexus.models._types import UTCDateTime, utcnow

MESSAGE_TYPES = ("text", "image", "file")


class Message(db.Model):
    """A persisted message, numbered by `seq` within its room."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("room_id", "seq", name="uq_messages_room_seq"),
        UniqueConstraint("sender_id", "client_msg_id", name="uq_messages_sender_client_msg_id"),
        CheckConstraint("type IN ('text', 'image', 'file')", name="ck_messages_type"),
        Index("ix_messages_sender_id_id", "sender_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    seq: Mapped[int]
    sender_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # Set for direct messages: the other participant.
    recipient_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(16), default="text")
    content: Mapped[str] = mapped_column(Text)
    attachment: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    client_msg_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    edited_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
