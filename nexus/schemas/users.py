"""Schemas for accounts and authentication."""
from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate

from nexus.models import ROLES

USERNAME = validate.Regexp(
    r"^[A-Za-z0-9_.-]{3,32}$", error="3 to 32 letters, digits, '_', '.' or '-'"
)
DEPARTMENT = validate.Regexp(r"^[A-Za-z0-9_-]{1,64}$", error="1 to 64 letters, digits, '_' or '-'")


class LoginSchema(Schema):
    """POST /api/auth/login."""

    class Meta:
        unknown = EXCLUDE

    username = fields.String(required=True, validate=validate.Length(min=1, max=64))
    password = fields.String(required=True, validate=validate.Length(min=1, max=1024))


class LogoutSchema(Schema):
    """POST /api/auth/logout: optionally revoke the refresh token too."""

    class Meta:
        unknown = EXCLUDE

    refresh_token = fields.String(data_key="refreshToken", validate=validate.Length(max=4096))


class UserCreateSchema(Schema):
    """A new account (CLI and admin API)."""

    username = fields.String(required=True, validate=USERNAME)
    password = fields.String(required=True, validate=validate.Length(min=8, max=1024))
    display_name = fields.String(data_key="displayName", validate=validate.Length(min=1, max=64))
    role = fields.String(load_default="user", validate=validate.OneOf(ROLES))
    department = fields.String(allow_none=True, validate=DEPARTMENT)


class PingSchema(Schema):
    """`ping` payload of seed B: `{timestamp}` (anything else is ignored)."""

    class Meta:
        unknown = EXCLUDE

    timestamp = fields.Raw(allow_none=True)
