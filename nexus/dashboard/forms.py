"""What the dashboard's forms and query strings may carry: marshmallow schemas, and the CSRF check."""
from __future__ import annotations

from typing import Any

from flask import request
from flask_wtf.csrf import generate_csrf, validate_csrf
from marshmallow import EXCLUDE, Schema, fields, post_load, validate
from wtforms import ValidationError as CSRFValidationError

from nexus.errors import NexusError
from nexus.models import ROLES
from nexus.schemas.broadcasts import NOTIFICATION_TYPES
from nexus.schemas.chat import clean_text

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRFToken"
# The broadcast kinds the dashboard has a form for (a room broadcast goes through the API or CLI).
FORM_KINDS = ("system", "admin", "department", "user")


def csrf_token() -> str:
    """The token every dashboard form posts back (kept in the signed session)."""
    return generate_csrf()


def check_csrf() -> None:
    """Refuse a state-changing request that does not carry this session's CSRF token (BAD_REQUEST)."""
    token = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    try:
        validate_csrf(token)
    except CSRFValidationError as exc:
        reason = str(exc).removeprefix("The ").rstrip(".")  # e.g. "CSRF token is missing"
        raise NexusError(
            "BAD_REQUEST",
            f"This form was not sent from the dashboard or has expired ({reason}). Reload the page and try again.",
            details={"csrf": True},
        ) from None


class _Form(Schema):
    class Meta:
        unknown = EXCLUDE  # the CSRF token and the submit buttons ride along


class LoginForm(_Form):
    """The sign-in form."""

    username = fields.String(required=True, validate=validate.Length(min=1, max=64))
    password = fields.String(required=True, validate=validate.Length(min=1, max=1024))
    next = fields.String(load_default=None, validate=validate.Length(max=512))


class RoleForm(_Form):
    """A new role for an account."""

    role = fields.String(required=True, validate=validate.OneOf(ROLES))


class NotificationForm(_Form):
    """A notification to one user."""

    title = fields.String(required=True, validate=validate.Length(min=1, max=200))
    message = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    type = fields.String(load_default="info", validate=validate.OneOf(NOTIFICATION_TYPES))


class BroadcastForm(_Form):
    """One of the broadcast forms; `action` is "preview" or "send". Targets are checked by BroadcastSchema."""

    kind = fields.String(required=True, validate=validate.OneOf(FORM_KINDS))
    action = fields.String(load_default="preview", validate=validate.OneOf(("preview", "send")))
    message = fields.String(load_default="")
    department = fields.String(load_default="", validate=validate.Length(max=64))
    username = fields.String(load_default="", validate=validate.Length(max=64))
    title = fields.String(load_default="", validate=validate.Length(max=200))
    type = fields.String(load_default="info", validate=validate.OneOf(NOTIFICATION_TYPES))

    @post_load
    def _trim(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        for name in ("department", "username", "title"):
            data[name] = clean_text(data[name])
        return data


class RoomQuery(_Form):
    """?q=&after=<name>: a page of rooms."""

    q = fields.String(load_default="", validate=validate.Length(max=64))
    after = fields.String(load_default=None, validate=validate.Length(max=64))

    @post_load
    def _clean(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data["q"] = clean_text(data["q"])
        return data
