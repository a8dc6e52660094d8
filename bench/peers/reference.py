"""What both Python peers answer, as the Node reference server (bench/node/server.js) does: the room
of a payload, the `room_message` a `send_message` makes (the same fields as the Node reference's
and Nexus's, so all move the same bytes) and the acks. The peers only add their framework's
emit and room calls."""
from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

_message_ids = itertools.count(1)
_room_seq: dict[str, int] = {}


def room_of(payload: Any) -> Any:
    if isinstance(payload, str):
        return payload
    return (payload.get("roomId") or payload.get("room")) if isinstance(payload, dict) else None


def invalid(fields: str) -> dict[str, Any]:
    return {"success": False, "error": {"code": "VALIDATION_ERROR", "message": fields}}


def joined(room: str) -> dict[str, Any]:
    return {"success": True, "roomId": room, "room": room}


def new_message(payload: Any, sender: str) -> tuple[str, dict[str, Any]] | None:
    """The room and the `room_message` of a `send_message` payload; None if it is not one."""
    room = room_of(payload) if isinstance(payload, dict) else None
    if not isinstance(room, str) or not isinstance(payload.get("content"), str):
        return None
    seq = _room_seq.get(room, 0) + 1
    _room_seq[room] = seq
    created_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return room, {
        "id": str(next(_message_ids)),
        "seq": seq,
        "roomId": room,
        "to": None,
        "from": sender,
        "sender": {"id": sender, "name": sender, "username": sender},
        "type": "text",
        "content": payload["content"],
        "attachment": None,
        "clientMsgId": payload.get("clientMsgId"),
        "createdAt": created_at,
        "timestamp": created_at,
        "editedAt": None,
        "deleted": False,
    }


def sent(message: dict[str, Any]) -> dict[str, Any]:
    return {"success": True, "messageId": message["id"], "message": message, "duplicate": False}
