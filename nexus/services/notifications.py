"""Notifications to one user: persisted, pushed live as `notification`, listed, and marked read."""
from __future__ import annotations

import json
from typing import Any, NoReturn

from sqlalchemy import Row, func, select, update

from nexus.errors import NexusError
from nexus.extensions import db
from nexus.models import Broadcast, Notification, isoformat, utcnow
from nexus.realtime import events
from nexus.services import broadcasts, users
from nexus.services.broadcasts import SYSTEM, Sender, clean_message

NOTIFICATION_TYPES = ("info", "success", "warning", "error")
MAX_TITLE_LENGTH = 200
MAX_DATA_BYTES = 4096
MAX_PAGE = 100
_MAX_ID = 2**53  # ids beyond this are nobody's (and would overflow PostgreSQL's integers)


def notify(
    user_id: int,
    title: str,
    message: str,
    *,
    type: str = "info",
    data: dict[str, Any] | None = None,
    sender: Sender | None = None,
) -> dict[str, Any]:
    """Store a notification for a user, record it as a broadcast, and push it after the commit."""
    title = clean_message(title, field="title", max_length=MAX_TITLE_LENGTH)
    message = clean_message(message)
    if type not in NOTIFICATION_TYPES:
        _invalid("type", f"Must be one of: {', '.join(NOTIFICATION_TYPES)}.")
    _check_data(data)
    if not isinstance(user_id, int) or not 1 <= user_id <= _MAX_ID:
        raise NexusError("USER_NOT_FOUND")
    sender = sender or SYSTEM
    user = users.get_user(user_id)
    row = Notification(user_id=user.id, type=type, title=title, message=message, data=data, created_at=utcnow())
    db.session.add(row)
    db.session.flush()
    wire = to_wire(row, sender)
    broadcasts.record(
        sender,
        kind="user",
        target=str(user.id),
        event=events.NOTIFICATION,
        payload=wire,
        room=events.user_room(user.id),
        notification_id=row.id,
    )
    broadcasts.commit()
    return wire


def unread(user_id: int, limit: int = 100) -> list[dict[str, Any]]:
    """A user's unread notifications, oldest first (read as columns; for many users at once:
    nexus.services.inbox)."""
    query = (
        select(*WIRE_COLUMNS, Broadcast.sender_user_id, Broadcast.sender_label)
        .outerjoin(Broadcast, Broadcast.notification_id == Notification.id)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
        .order_by(Notification.id)
        .limit(max(1, min(limit, 1000)))
    )
    return [wire_of_columns(row) for row in db.session.execute(query)]


def list_page(user_id: int, *, unread_only: bool, before: int | None, limit: int) -> dict[str, Any]:
    """A page of a user's notifications, newest first, before an id: {notifications, hasMore, unreadCount}."""
    limit = max(1, min(limit, MAX_PAGE))
    query = _with_sender().where(Notification.user_id == user_id).order_by(Notification.id.desc()).limit(limit + 1)
    if unread_only:
        query = query.where(Notification.read_at.is_(None))
    if before is not None:
        query = query.where(Notification.id < before)
    rows = [_wire_of(row) for row in db.session.execute(query)]
    return {"notifications": rows[:limit], "hasMore": len(rows) > limit, "unreadCount": unread_count(user_id)}


def unread_count(user_id: int) -> int:
    """How many of a user's notifications are unread."""
    query = select(func.count()).where(Notification.user_id == user_id, Notification.read_at.is_(None))
    return db.session.scalar(query) or 0


def mark_read(user_id: int, notification_id: int) -> dict[str, Any]:
    """Mark one of the user's notifications read (again: no change); NOT_FOUND for anyone else's."""
    if not isinstance(notification_id, int) or not 1 <= notification_id <= _MAX_ID:
        raise NexusError("NOT_FOUND", "No such notification.")
    found = db.session.execute(_with_sender().where(Notification.id == notification_id)).first()
    if found is None or found[0].user_id != user_id:
        raise NexusError("NOT_FOUND", "No such notification.")
    if found[0].read_at is None:
        found[0].read_at = utcnow()
        db.session.commit()
    return _wire_of(found)


def mark_all_read(user_id: int) -> int:
    """Mark every unread notification of a user read; returns how many were unread."""
    result = db.session.execute(
        update(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
        .values(read_at=utcnow())
        .execution_options(synchronize_session="fetch")
    )
    db.session.commit()
    return result.rowcount or 0


# What `to_wire` reads of a notification, for reads that need no ORM object.
WIRE_COLUMNS = (Notification.id, Notification.type, Notification.title, Notification.message, Notification.data,
                 Notification.created_at, Notification.read_at)


def to_wire(row: Notification | Row[Any], sender: Sender) -> dict[str, Any]:
    """What clients receive: {type, title, message, timestamp} with an id, data, read state and sender."""
    created = isoformat(row.created_at)
    return {
        "id": str(row.id),
        "type": row.type,
        "title": row.title,
        "message": row.message,
        "data": row.data if row.data is not None else {},
        "timestamp": created,
        "createdAt": created,
        "read": row.read_at is not None,
        "readAt": isoformat(row.read_at),
        "from": sender.public(),
    }


def _with_sender() -> Any:
    # The sender is kept on the notification's Broadcast row; the system's when there is none.
    return select(Notification, Broadcast.sender_user_id, Broadcast.sender_label).outerjoin(
        Broadcast, Broadcast.notification_id == Notification.id
    )


def wire_of_columns(row: Row[Any]) -> dict[str, Any]:
    """`to_wire` of a row of WIRE_COLUMNS with the Broadcast's sender_user_id and sender_label."""
    return to_wire(row, _sender(row.sender_user_id, row.sender_label))


def _wire_of(row: Any) -> dict[str, Any]:
    notification, sender_id, label = row
    return to_wire(notification, _sender(sender_id, label))


def _sender(sender_id: int | None, label: str | None) -> Sender:
    return SYSTEM if label is None else Sender(user_id=sender_id, label=label)


def _check_data(data: Any) -> None:
    if data is None:
        return
    if not isinstance(data, dict):
        _invalid("data", "Must be a JSON object.")
    try:
        encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError):
        _invalid("data", "Must hold JSON values only.")
    if len(encoded) > MAX_DATA_BYTES:
        _invalid("data", f"At most {MAX_DATA_BYTES} bytes as JSON, got {len(encoded)}.")


def _invalid(field: str, problem: str) -> NoReturn:
    raise NexusError("VALIDATION_ERROR", f"{field}: {problem}", details={field: [problem]})
