"""Broadcasts of seed B: system, admin, department and one-user messages."""
from __future__ import annotations

from typing import Any

from nexus.models import User, isoformat, utcnow
from nexus.realtime import broadcast, events
from nexus.services import users


def send_system_message(actor: User, message: str) -> dict[str, Any]:
    """`system_message` to every connected user."""
    payload = {"type": "system", "message": message, "timestamp": _now(), "from": _sender(actor)}
    broadcast.emit(events.SYSTEM_MESSAGE, payload, room=events.ALL_USERS_ROOM)
    return payload


def send_admin_message(actor: User, message: str) -> dict[str, Any]:
    """`admin_message` to the administrators."""
    payload = {"type": "admin", "message": message, "timestamp": _now(), "from": _sender(actor)}
    broadcast.emit(events.ADMIN_MESSAGE, payload, room=events.ROLE_ROOMS["admin"])
    return payload


def send_department_message(actor: User, department: str, message: str) -> dict[str, Any]:
    """`department_message` to one department."""
    payload = {
        "type": "department",
        "department": department,
        "message": message,
        "timestamp": _now(),
        "from": _sender(actor),
    }
    broadcast.emit(events.DEPARTMENT_MESSAGE, payload, room=events.department_room(department))
    return payload


def send_user_message(actor: User, user_id: int, message: str, *, title: str, kind: str) -> dict[str, Any]:
    """A live `notification` to every socket of one user (persisted notifications come with their issue)."""
    target = users.get_user(user_id)
    payload = {"type": kind, "title": title, "message": message, "timestamp": _now(), "from": _sender(actor)}
    broadcast.emit(events.NOTIFICATION, payload, room=events.user_room(target.id))
    return payload


def _now() -> str:
    return isoformat(utcnow())


def _sender(actor: User) -> dict[str, Any]:
    return {"id": str(actor.id), "username": actor.username, "displayName": actor.display_name}
