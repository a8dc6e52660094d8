"""Notifications over REST: a user's own (list, mark read), and sending one (admins and services)."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from nexus.api import current_user, json_body, require_admin_or_service
from nexus.api.openapi import describe
from nexus.errors import NexusError
from nexus.schemas import MAX_ID, load
from nexus.schemas.notifications import NotificationCreateSchema, NotificationListSchema
from nexus.schemas.responses import MarkedAllSchema, NotificationPageSchema, NotificationResponseSchema
from nexus.services import notifications

bp = Blueprint("notifications", __name__, url_prefix="/notifications")


@bp.get("")
@describe("My notifications", query=NotificationListSchema, response=NotificationPageSchema)
def list_mine():
    """?unread=true|false &before=<id> &limit= (1..100, default 20): the caller's, newest first."""
    user = current_user()
    query = load(NotificationListSchema(), request.args.to_dict())
    page = notifications.list_page(
        user.id, unread_only=query["unread"], before=query["before"], limit=query["limit"]
    )
    return jsonify({"success": True, **page})


@bp.post("/<int:notification_id>/read")
@describe("Mark one read", response=NotificationResponseSchema)
def mark_read(notification_id: int):
    """Mark one of the caller's notifications read (idempotent); 404 for anyone else's."""
    user = current_user()
    if notification_id > MAX_ID:  # no notification has such an id (and the database would refuse the number)
        raise NexusError("NOT_FOUND", "No such notification.")
    return jsonify({"success": True, "notification": notifications.mark_read(user.id, notification_id)})


@bp.post("/read-all")
@describe("Mark all read", response=MarkedAllSchema)
def mark_all_read():
    """Mark all of the caller's notifications read; says how many were unread."""
    user = current_user()
    return jsonify({"success": True, "updated": notifications.mark_all_read(user.id)})


@bp.post("")
@describe("Notify a user", auth="admin_or_service", body=NotificationCreateSchema,
          response=NotificationResponseSchema, status=201, errors=("USER_NOT_FOUND",))
def send():
    """{userId, title, message, type?, data?}: an admin's bearer token or a service's X-API-Key."""
    sender = require_admin_or_service()
    data = load(NotificationCreateSchema(), json_body())
    sent = notifications.notify(
        data["user_id"], data["title"], data["message"], type=data["type"], data=data["data"], sender=sender
    )
    return jsonify({"success": True, "notification": sent}), 201
