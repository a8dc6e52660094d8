"""GET /health: liveness, with no dependency checked."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from nexus.models import isoformat, utcnow

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    config = current_app.config["NEXUS"]
    return jsonify({"status": "ok", "instanceId": config.instance_id, "timestamp": isoformat(utcnow())})
