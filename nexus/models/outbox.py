"""The transactional outbox: events written in the same transaction as the change they report."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from nexus.extensions import db
from nexus.models._types import UTCDateTime, utcnow


class OutboxEntry(db.Model):
    """Events of one committed change, kept until the message queue has taken them.

    The instance that commits publishes the events right after the commit and marks the entry
    published; an entry still unpublished after a few seconds (the instance died between commit
    and publish, or the broker was down) is published by whichever instance finds it.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        # Only the unpublished entries are ever searched.
        Index(
            "ix_outbox_unpublished",
            "id",
            postgresql_where=db.text("published_at IS NULL"),
            sqlite_where=db.text("published_at IS NULL"),
        ),
        Index("ix_outbox_published_at", "published_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # The message whose events these are: a retried send of it publishes them again if still due.
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    # [{"event", "room", "skipSid", "data"}, ...] in the order they are to be sent.
    emissions: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    instance_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
