"""The record of every broadcast: who sent what to which audience, from which instance."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from nexus.extensions import db
from nexus.models._types import UTCDateTime, isoformat, utcnow

BROADCAST_KINDS = ("system", "admin", "department", "room", "user")


class Broadcast(db.Model):
    """One sent broadcast: the event and payload as emitted, and its sender (a user, or a service)."""

    __tablename__ = "broadcasts"
    __table_args__ = (
        CheckConstraint("kind IN ('system', 'admin', 'department', 'room', 'user')", name="ck_broadcasts_kind"),
        UniqueConstraint("notification_id", name="uq_broadcasts_notification_id"),
        Index("ix_broadcasts_kind_id", "kind", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Kept when the sending account is deleted: the label still says who it was.
    sender_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    sender_label: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    # The room name, department or user id the broadcast went to; None for everyone / the admins.
    target: Mapped[str | None] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    # For kind "user": the notification it delivered (where its sender is looked up).
    notification_id: Mapped[int | None] = mapped_column(ForeignKey("notifications.id", ondelete="SET NULL"))
    instance_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def summary(self) -> dict[str, Any]:
        """The record as the dashboard and the audit API show it."""
        return {
            "id": str(self.id),
            "kind": self.kind,
            "target": self.target,
            "event": self.event,
            "sender": {
                "id": None if self.sender_user_id is None else str(self.sender_user_id),
                "name": self.sender_label,
            },
            "payload": self.payload,
            "notificationId": None if self.notification_id is None else str(self.notification_id),
            "instanceId": self.instance_id,
            "createdAt": isoformat(self.created_at),
        }
