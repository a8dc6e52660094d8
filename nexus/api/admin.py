"""Administration over REST: broadcasts, and the broadcast and action records."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from nexus.api import json_body, require_admin, require_admin_or_service
from nexus.api.openapi import describe
from nexus.schemas import load
from nexus.schemas.broadcasts import ActionListSchema, BroadcastListSchema, BroadcastSchema
from nexus.schemas.responses import ActionPageSchema, BroadcastPageSchema, BroadcastSentSchema
from nexus.services import audit, broadcasts

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.post("/broadcast")
@describe("Broadcast a message", auth="admin_or_service", body=BroadcastSchema, response=BroadcastSentSchema,
          errors=("ROOM_NOT_FOUND", "USER_NOT_FOUND"))
def broadcast():
    """{kind: system|admin|department|room|user, message, department?, room?, userId?, title?, type?}."""
    sender = require_admin_or_service()
    data = load(BroadcastSchema(), json_body())
    return jsonify({"success": True, "kind": data["kind"], "broadcast": broadcasts.send(sender, data)})


@bp.get("/broadcasts")
@describe("What was broadcast", auth="admin", query=BroadcastListSchema, response=BroadcastPageSchema)
def list_broadcasts():
    """?kind=&before=<id>&limit=: what was broadcast, newest first."""
    require_admin()
    query = load(BroadcastListSchema(), request.args.to_dict())
    page = broadcasts.list_broadcasts(kind=query["kind"], before=query["before"], limit=query["limit"])
    return jsonify({"success": True, **page})


@bp.get("/actions")
@describe("What users did", auth="admin", query=ActionListSchema, response=ActionPageSchema)
def list_actions():
    """?userId=&action=&before=<id>&limit=: the audit trail of user actions, newest first."""
    require_admin()
    query = load(ActionListSchema(), request.args.to_dict())
    page = audit.list_actions(
        user_id=query["user_id"], action=query["action"], before=query["before"], limit=query["limit"]
    )
    return jsonify({"success": True, **page})
