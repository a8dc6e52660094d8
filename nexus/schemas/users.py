"""Schemas for accounts and authentication."""
from __future__ import annotations

from typing import Any

from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates_schema,
)

from nexus.models import ROLES
from nexus.schemas.chat import clean_text

USERNAME = validate.Regexp(
    r"^[A-Za-z0-9_.-]{3,32}\Z", error="3 to 32 letters, digits, '_', '.' or '-'"
)
DEPARTMENT = validate.Regexp(r"^[A-Za-z0-9_-]{1,64}\Z", error="1 to 64 letters, digits, '_' or '-'")


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
    """`ping` payload `{timestamp}`, returned in `pong` as clientTimestamp (anything else is ignored)."""

    class Meta:
        unknown = EXCLUDE

    timestamp = fields.Raw(allow_none=True)


class UserSearchSchema(Schema):
    """GET /api/users: ?q=&limit=&cursor= (q is cleaned and trimmed; its characters are all literal)."""

    class Meta:
        unknown = EXCLUDE

    q = fields.String(load_default="", validate=validate.Length(max=64))
    limit = fields.Integer(strict=False, load_default=20, validate=validate.Range(min=1, max=50))
    cursor = fields.String(validate=USERNAME)

    @post_load
    def _clean(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        # Control characters (NUL among them, which PostgreSQL refuses) never reach the query.
        data["q"] = clean_text(data["q"])
        return data


PROTECTED_PROFILE_FIELDS = ("id", "username", "role", "status", "password")


class ProfileUpdateSchema(Schema):
    """PATCH /api/users/me: {displayName?, department? | null}; anything else is refused."""

    class Meta:
        unknown = RAISE

    display_name = fields.String(data_key="displayName")
    department = fields.String(allow_none=True, validate=DEPARTMENT)

    @pre_load
    def _protected(self, data: Any, **_: Any) -> Any:
        if isinstance(data, dict):
            refused = [name for name in PROTECTED_PROFILE_FIELDS if name in data]
            if refused:
                raise ValidationError({name: ["This field cannot be changed here."] for name in refused})
        return data

    @validates_schema
    def _not_empty(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ValidationError("Give at least one of displayName and department.")

    @post_load
    def _clean(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if "display_name" in data:
            # A name is one line: clean_text drops control characters, split() folds newlines and tabs.
            data["display_name"] = " ".join(clean_text(data["display_name"]).split())
            if not 1 <= len(data["display_name"]) <= 64:
                raise ValidationError("1 to 64 characters (after trimming).", "displayName")
        return data


class StatusSchema(Schema):
    """`update_status`: a bare status ("online") or {status}."""

    class Meta:
        unknown = EXCLUDE

    status = fields.String(required=True, validate=validate.OneOf(("online", "away", "busy", "offline")))

    @pre_load
    def _shape(self, data, **_):
        return {"status": data} if isinstance(data, str) else data
