"""Schemas of the /admin namespace's moderation events."""
from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, fields, pre_load, validate

from nexus.models import ROLES
from nexus.schemas import MAX_ID


class UserRefSchema(Schema):
    """{userId} or the id alone."""

    class Meta:
        unknown = EXCLUDE

    user_id = fields.Integer(data_key="userId", required=True, strict=False, validate=validate.Range(min=1, max=MAX_ID))

    @pre_load
    def _shape(self, data: Any, **_: Any) -> Any:
        if isinstance(data, (int, str)) and not isinstance(data, bool):
            return {"userId": data}
        return data


class RoleSchema(UserRefSchema):
    """`set_role`: {userId, role}."""

    role = fields.String(required=True, validate=validate.OneOf(ROLES))


class UserActionSchema(Schema):
    """`user_action`: {action, data}, what a user did in the front end, recorded for audit."""

    class Meta:
        unknown = EXCLUDE

    action = fields.String(required=True)
    data = fields.Raw(load_default=None, allow_none=True)


class NotificationRefSchema(Schema):
    """`notification_read`: {id} / {notificationId} or the id alone."""

    class Meta:
        unknown = EXCLUDE

    id = fields.Integer(required=True, strict=False, validate=validate.Range(min=1, max=MAX_ID))

    @pre_load
    def _shape(self, data: Any, **_: Any) -> Any:
        if isinstance(data, (int, str)) and not isinstance(data, bool):
            return {"id": data}
        if isinstance(data, dict) and "id" not in data and "notificationId" in data:
            return {**data, "id": data["notificationId"]}
        return data
