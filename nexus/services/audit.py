"""The audit trail: users' `user_action` events, recorded and listed for administrators."""
from __future__ import annotations

import json
import re
from typing import Any, NoReturn

from sqlalchemy import select

from nexus.errors import NexusError
from nexus.extensions import db
from nexus.models import User, UserAction, isoformat, utcnow
from nexus.services.rooms import Actor

ACTION = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
MAX_DATA_BYTES = 4096
MAX_DATA_DEPTH = 5
MAX_PAGE = 100


def record_action(actor: Actor, action: str, data: Any, *, instance_id: str) -> dict[str, Any]:
    """Store one action of a user (guests are refused); nothing is sent to anyone."""
    if actor.is_guest:
        raise NexusError("FORBIDDEN", "Guests' actions are not recorded; authenticate first.")
    if not isinstance(action, str) or not ACTION.fullmatch(action):
        _invalid("action", "1 to 64 letters, digits or _ . : -")
    _check_data(data)
    row = UserAction(user_id=actor.user_id, action=action, data=data, instance_id=instance_id, created_at=utcnow())
    db.session.add(row)
    try:
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return {"id": str(row.id), "action": row.action, "createdAt": isoformat(row.created_at)}


def list_actions(*, user_id: int | None, action: str | None, before: int | None, limit: int) -> dict[str, Any]:
    """Recorded actions, newest first, a page before an id, by user and/or action: {actions, hasMore}."""
    limit = max(1, min(limit, MAX_PAGE))
    query = (
        select(UserAction, User.username)
        .outerjoin(User, User.id == UserAction.user_id)
        .order_by(UserAction.id.desc())
        .limit(limit + 1)
    )
    if user_id is not None:
        query = query.where(UserAction.user_id == user_id)
    if action is not None:
        query = query.where(UserAction.action == action)
    if before is not None:
        query = query.where(UserAction.id < before)
    rows = db.session.execute(query).all()
    return {"actions": [_summary(row, username) for row, username in rows[:limit]], "hasMore": len(rows) > limit}


def _summary(row: UserAction, username: str | None) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "userId": None if row.user_id is None else str(row.user_id),
        "username": username,
        "action": row.action,
        "data": row.data,
        "instanceId": row.instance_id,
        "createdAt": isoformat(row.created_at),
    }


def _check_data(data: Any) -> None:
    # Refused rather than truncated: a cut-down record would misstate what the user did.
    if _depth(data, MAX_DATA_DEPTH + 1) > MAX_DATA_DEPTH:
        _invalid("data", f"Nested deeper than {MAX_DATA_DEPTH} levels.")
    try:
        encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError):
        _invalid("data", "Must hold JSON values only.")
    if len(encoded) > MAX_DATA_BYTES:
        _invalid("data", f"At most {MAX_DATA_BYTES} bytes as JSON, got {len(encoded)}.")


def _depth(value: Any, give_up: int) -> int:
    """How deeply lists and objects nest in a value (a scalar is 0), counted no further than give_up."""
    if give_up <= 0 or not isinstance(value, (dict, list, tuple)):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(child, give_up - 1) for child in children), default=0)


def _invalid(field: str, problem: str) -> NoReturn:
    raise NexusError("VALIDATION_ERROR", f"{field}: {problem}", details={field: [problem]})
