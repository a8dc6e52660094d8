"""Schemas of the admin API: broadcasts, and the broadcast and action records."""
from __future__ import annotations

from typing import Any

from marshmallow import (
    EXCLUDE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from nexus.models import BROADCAST_KINDS
from nexus.schemas import MAX_ID
from nexus.schemas.chat import RoomName
from nexus.schemas.users import DEPARTMENT

KINDS = BROADCAST_KINDS
NOTIFICATION_TYPES = ("info", "success", "warning", "error")
ACTION = validate.Regexp(r"^[A-Za-z0-9_.:-]{1,64}\Z", error="1 to 64 letters, digits or _ . : -")

# What each kind needs besides the message: (attribute, wire name).
_TARGETS = {"department": ("department", "department"), "room": ("room", "room"), "user": ("user_id", "userId")}


class BroadcastSchema(Schema):
    """POST /api/admin/broadcast and the /admin `broadcast` event."""

    class Meta:
        unknown = EXCLUDE

    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    message = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    title = fields.String(validate=validate.Length(min=1, max=200))
    type = fields.String(load_default="info", validate=validate.OneOf(NOTIFICATION_TYPES))
    department = fields.String(validate=DEPARTMENT)
    room = RoomName()
    user_id = fields.Integer(data_key="userId", strict=False, validate=validate.Range(min=1, max=MAX_ID))

    @validates_schema
    def _target(self, data: dict[str, Any], **_: Any) -> None:
        needed = _TARGETS.get(data["kind"])
        if needed and not data.get(needed[0]):
            raise ValidationError(f"Required for a {data['kind']} message.", needed[1])


class PageSchema(Schema):
    """?before=<id>&limit= (1..100, default 20): keyset pages, newest first."""

    class Meta:
        unknown = EXCLUDE

    before = fields.Integer(strict=False, load_default=None, validate=validate.Range(min=1, max=MAX_ID))
    limit = fields.Integer(strict=False, load_default=20, validate=validate.Range(min=1, max=100))


class BroadcastListSchema(PageSchema):
    """GET /api/admin/broadcasts: ?kind=&before=&limit=."""

    kind = fields.String(load_default=None, validate=validate.OneOf(KINDS))


class ActionListSchema(PageSchema):
    """GET /api/admin/actions: ?userId=&action=&before=&limit=."""

    user_id = fields.Integer(
        data_key="userId", strict=False, load_default=None, validate=validate.Range(min=1, max=MAX_ID)
    )
    action = fields.String(load_default=None, validate=ACTION)
