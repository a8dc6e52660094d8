"""For operators: GET /metrics (Prometheus), GET /api/metrics (JSON summary of every instance),
GET /socket-status (this instance's sockets). An admin bearer token or the scrape token NEXUS_METRICS_TOKEN."""
from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nexus.api import require_admin
from nexus.api.openapi import describe
from nexus.models import isoformat, utcnow
from nexus.schemas.responses import MetricsSummarySchema, SocketStatusSchema

bp = Blueprint("ops", __name__)


def require_operator() -> None:
    """The scrape token (Authorization: Bearer <NEXUS_METRICS_TOKEN>), or an admin's access token."""
    expected = current_app.config["NEXUS"].metrics_token
    header = request.headers.get("Authorization", "")
    if expected and header.startswith("Bearer "):
        if hmac.compare_digest(header[7:].strip().encode(), expected.encode()):
            return
    require_admin()


@bp.get("/metrics")
@describe("Prometheus metrics", auth="operator",
          responses={200: ("The Prometheus text format.", {"text/plain": {"schema": {"type": "string"}}})})
def prometheus_metrics():
    """Connections, events, latency, messages stored, rate-limit rejections, errors by code."""
    require_operator()
    registry = current_app.extensions["nexus.metrics"].registry
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


@bp.get("/api/metrics")
@describe("Metrics of every instance", auth="operator", response=MetricsSummarySchema)
def metrics_summary():
    """Connections, message and error rates and memory as JSON: every live instance summed, and each one's figures."""
    require_operator()
    cluster = current_app.extensions["nexus.stats"].cluster()
    totals, instances = cluster["totals"], cluster["instances"]
    return jsonify(
        {
            "success": True,
            "totalConnections": totals["totalConnections"],
            "activeConnections": totals["connections"],
            "messagesPerSecond": totals["messagesPerSecond"],
            "errorsPerSecond": totals["errorsPerSecond"],
            "uptime": current_app.extensions["nexus.metrics"].uptime_s(),
            "memory": {"rss": sum(stats.get("memoryRss", 0) for stats in instances)},
            "usersOnline": totals["usersOnline"],
            "instances": instances,
            "timestamp": isoformat(utcnow()),
        }
    )


@bp.get("/socket-status")
@describe("This instance's sockets", auth="operator", response=SocketStatusSchema)
def socket_status():
    """This instance's connections by namespace and transport, rooms, users."""
    require_operator()
    mine = current_app.extensions["nexus.stats"].local()
    return jsonify({"success": True, **mine})
