"""Schemas of the notifications API."""
from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate

from nexus.schemas import MAX_ID
from nexus.schemas.broadcasts import NOTIFICATION_TYPES, PageSchema


class NotificationCreateSchema(Schema):
    """POST /api/notifications: {userId, title, message, type?, data?} (admins and services)."""

    class Meta:
        unknown = EXCLUDE

    user_id = fields.Integer(data_key="userId", required=True, strict=False, validate=validate.Range(min=1, max=MAX_ID))
    title = fields.String(required=True, validate=validate.Length(min=1, max=200))
    message = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    type = fields.String(load_default="info", validate=validate.OneOf(NOTIFICATION_TYPES))
    data = fields.Dict(keys=fields.String(), load_default=None, allow_none=True)


class NotificationListSchema(PageSchema):
    """GET /api/notifications: ?unread=true|false&before=&limit=."""

    unread = fields.Boolean(load_default=False)
