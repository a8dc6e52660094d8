"""Broadcasts (system, admin, department, room and one-user messages), each recorded once sent."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, NoReturn

from flask import current_app
from marshmallow import validate
from sqlalchemy import select

from nexus.errors import NexusError
from nexus.extensions import db
from nexus.logs import log_event
from nexus.models import BROADCAST_KINDS, Broadcast, User, isoformat, utcnow
from nexus.realtime import broadcast, events
from nexus.schemas.chat import clean_text
from nexus.schemas.users import DEPARTMENT
from nexus.services import rooms

log = logging.getLogger("nexus.broadcasts")

MAX_MESSAGE_LENGTH = 2000
MAX_PAGE = 100


@dataclass(frozen=True)
class Sender:
    """Who a broadcast comes from: a user, or a named service (no account)."""

    user_id: int | None
    label: str

    @classmethod
    def of_user(cls, user: User) -> "Sender":
        """A user's broadcasts, labelled with their username."""
        return cls(user_id=user.id, label=user.username)

    @classmethod
    def service(cls, name: str) -> "Sender":
        """A service's broadcasts, labelled service:<name>."""
        return cls(user_id=None, label=f"service:{name}")

    def public(self) -> dict[str, Any]:
        """The `from` of a payload."""
        return {"id": None if self.user_id is None else str(self.user_id), "name": self.label}


# Notifications sent without a sender (a background job with nothing better to say).
SYSTEM = Sender(user_id=None, label="system")


def send_system_message(sender: Sender, message: str) -> dict[str, Any]:
    """`system_message` to every connected user."""
    payload = {"type": "system", "message": clean_message(message), "timestamp": _now(), "from": sender.public()}
    return _send(sender, "system", None, events.SYSTEM_MESSAGE, payload, room=events.ALL_USERS_ROOM)


def send_admin_message(sender: Sender, message: str) -> dict[str, Any]:
    """`admin_message` to the administrators."""
    payload = {"type": "admin", "message": clean_message(message), "timestamp": _now(), "from": sender.public()}
    return _send(sender, "admin", None, events.ADMIN_MESSAGE, payload, room=events.ROLE_ROOMS["admin"])


def send_department_message(sender: Sender, department: str, message: str) -> dict[str, Any]:
    """`department_message` to one department."""
    _check("department", DEPARTMENT, department)
    payload = {
        "type": "department",
        "department": department,
        "message": clean_message(message),
        "timestamp": _now(),
        "from": sender.public(),
    }
    room = events.department_room(department)
    return _send(sender, "department", department, events.DEPARTMENT_MESSAGE, payload, room=room)


def send_room_message(sender: Sender, room: str, message: str) -> dict[str, Any]:
    """`system_message` of type "room" to the members of one chat room (ROOM_NOT_FOUND for others)."""
    text = clean_message(message)
    if not isinstance(room, str):
        _invalid("room", "Not a valid string.")
    name = rooms.find_room(room).name
    payload = {"type": "room", "room": name, "message": text, "timestamp": _now(), "from": sender.public()}
    return _send(sender, "room", name, events.SYSTEM_MESSAGE, payload, room=name)


def send_user_message(
    sender: Sender, user_id: int, message: str, *, title: str, kind: str = "info"
) -> dict[str, Any]:
    """A persisted `notification` to every socket of one user."""
    from nexus.services import notifications  # notifications builds on this module

    return notifications.notify(user_id, title, message, type=kind, sender=sender)


def send(sender: Sender, data: Mapping[str, Any]) -> dict[str, Any]:
    """Send a body loaded by BroadcastSchema, by its kind."""
    kind = data["kind"]
    if kind == "system":
        return send_system_message(sender, data["message"])
    if kind == "admin":
        return send_admin_message(sender, data["message"])
    if kind == "department":
        return send_department_message(sender, data["department"], data["message"])
    if kind == "room":
        return send_room_message(sender, data["room"], data["message"])
    if kind == "user":
        title = data.get("title") or "Notification"
        return send_user_message(sender, data["user_id"], data["message"], title=title, kind=data.get("type", "info"))
    _invalid("kind", f"Must be one of: {', '.join(BROADCAST_KINDS)}.")


def list_broadcasts(*, kind: str | None, before: int | None, limit: int) -> dict[str, Any]:
    """Recorded broadcasts, newest first, a page before an id: {broadcasts, hasMore}."""
    if kind is not None and kind not in BROADCAST_KINDS:
        _invalid("kind", f"Must be one of: {', '.join(BROADCAST_KINDS)}.")
    limit = max(1, min(limit, MAX_PAGE))
    query = select(Broadcast).order_by(Broadcast.id.desc()).limit(limit + 1)
    if kind is not None:
        query = query.where(Broadcast.kind == kind)
    if before is not None:
        query = query.where(Broadcast.id < before)
    rows = list(db.session.scalars(query))
    return {"broadcasts": [row.summary() for row in rows[:limit]], "hasMore": len(rows) > limit}


# -- shared with the notifications service ---------------------------------------------------


def record(
    sender: Sender,
    *,
    kind: str,
    target: str | None,
    event: str,
    payload: dict[str, Any],
    room: str,
    notification_id: int | None = None,
) -> Broadcast:
    """Add the Broadcast row and queue its event for after the commit (the caller commits)."""
    row = Broadcast(
        sender_user_id=sender.user_id,
        sender_label=sender.label,
        kind=kind,
        target=target,
        event=event,
        payload=payload,
        notification_id=notification_id,
        instance_id=current_app.config["NEXUS"].instance_id,
        created_at=utcnow(),
    )
    db.session.add(row)
    db.session.flush()
    log_event(log, "broadcast_sent", "broadcast id={broadcastId} kind={kind} target={target} event={eventName} by={by}",
              broadcastId=row.id, kind=kind, target=target, eventName=event, by=sender.label)
    # Clients get the record's id too: what they receive is what the sender was answered
    # (a notification carries its own id instead).
    emitted = payload if notification_id is not None else {**payload, "broadcastId": str(row.id)}
    broadcast.emit_after_commit(db.session, event, emitted, room=room)
    return row


def commit() -> None:
    """Commit, which sends the queued events; on failure roll back (dropping them) and re-raise."""
    try:
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise


def clean_message(message: Any, *, field: str = "message", max_length: int = MAX_MESSAGE_LENGTH) -> str:
    """Text trimmed and without control characters, 1..max_length long; VALIDATION_ERROR otherwise."""
    if not isinstance(message, str):
        _invalid(field, "Not a valid string.")
    text = clean_text(message)
    if not 1 <= len(text) <= max_length:
        _invalid(field, f"1 to {max_length} characters (after trimming).")
    return text


def _send(
    sender: Sender, kind: str, target: str | None, event: str, payload: dict[str, Any], *, room: str
) -> dict[str, Any]:
    row = record(sender, kind=kind, target=target, event=event, payload=payload, room=room)
    commit()
    return {**payload, "broadcastId": str(row.id)}


def _check(field: str, validator: validate.Regexp, value: Any) -> None:
    # fullmatch: the validator's own `$` would let a trailing newline through.
    if not isinstance(value, str):
        _invalid(field, "Not a valid string.")
    if validator.regex.fullmatch(value) is None:
        _invalid(field, validator.error)


def _invalid(field: str, problem: str) -> NoReturn:
    raise NexusError("VALIDATION_ERROR", f"{field}: {problem}", details={field: [problem]})


def _now() -> str:
    return isoformat(utcnow())
