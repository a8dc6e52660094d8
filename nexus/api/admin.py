"""Administration over REST: broadcasts."""
from __future__ import annotations

from flask import Blueprint, jsonify

from nexus.api import json_body, require_admin
from nexus.schemas import load
from nexus.schemas.broadcasts import BroadcastSchema
from nexus.services import broadcasts

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.post("/broadcast")
def broadcast():
    actor = require_admin()
    data = load(BroadcastSchema(), json_body())
    kind = data["kind"]
    if kind == "system":
        sent = broadcasts.send_system_message(actor, data["message"])
    elif kind == "admin":
        sent = broadcasts.send_admin_message(actor, data["message"])
    elif kind == "department":
        sent = broadcasts.send_department_message(actor, data["department"], data["message"])
    else:
        sent = broadcasts.send_user_message(
            actor, data["user_id"], data["message"], title=data.get("title") or "Notification", kind=data["type"]
        )
    return jsonify({"success": True, "kind": kind, "broadcast": sent})
