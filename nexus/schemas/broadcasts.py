"""Schemas for admin broadcasts."""
from __future__ import annotations

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from nexus.schemas.users import DEPARTMENT

KINDS = ("system", "admin", "department", "user")
NOTIFICATION_TYPES = ("info", "success", "warning", "error")


class BroadcastSchema(Schema):
    """POST /api/admin/broadcast."""

    class Meta:
        unknown = EXCLUDE

    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    message = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    title = fields.String(validate=validate.Length(min=1, max=200))
    type = fields.String(load_default="info", validate=validate.OneOf(NOTIFICATION_TYPES))
    department = fields.String(validate=DEPARTMENT)
    user_id = fields.Integer(data_key="userId", strict=False, validate=validate.Range(min=1))

    @validates_schema
    def _target(self, data, **_):
        if data["kind"] == "department" and not data.get("department"):
            raise ValidationError("required for a department message", "department")
        if data["kind"] == "user" and not data.get("user_id"):
            raise ValidationError("required for a message to one user", "userId")
