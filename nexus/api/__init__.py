"""REST blueprints under /api, and the JSON error contract they share."""
from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request
from flask_jwt_extended import get_jwt, verify_jwt_in_request
from werkzeug.exceptions import HTTPException

from nexus import outages
from nexus.errors import NexusError
from nexus.extensions import db
from nexus.logs import log_event
from nexus.models import User
from nexus.schemas import UNSTORABLE, unstorable_refusal
from nexus.services import tokens
from nexus.services.broadcasts import Sender
from nexus.services.rooms import Actor

log = logging.getLogger("nexus.api")

API_KEY_HEADER = "X-API-Key"

_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
}


def error_response(error: NexusError):
    """The JSON body and status of an error (with `Retry-After` when it carries a retry hint)."""
    return jsonify({"success": False, "error": error.to_dict()}), error.status, outages.retry_after_header(error)


def json_body() -> dict[str, Any]:
    """The request's JSON object; UNSUPPORTED_MEDIA_TYPE or BAD_REQUEST otherwise."""
    if not request.is_json:
        raise NexusError("UNSUPPORTED_MEDIA_TYPE")
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise NexusError("BAD_REQUEST", "The body must be a JSON object.")
    return data


def current_user(*, refresh: bool = False) -> User:
    """The account of the request's bearer token (checked against the blocklist and bans)."""
    verify_jwt_in_request(refresh=refresh)
    return tokens.identity_from_claims(get_jwt()).user


def current_actor() -> Actor:
    """The requesting user as services take it."""
    user = current_user()
    return Actor(user_id=user.id, role=user.role, username=user.username, display_name=user.display_name)


def require_admin() -> User:
    """The requesting admin; FORBIDDEN for anyone else."""
    user = current_user()
    if not user.is_admin:
        raise NexusError("FORBIDDEN", "Administrators only.")
    return user


def require_admin_or_service() -> Sender:
    """The sender of the request: a service by its X-API-Key, else the admin of the bearer token."""
    key = request.headers.get(API_KEY_HEADER)
    if key is None:
        return Sender.of_user(require_admin())
    if not _known_service_key(key):
        log.warning("refused an unknown API key from %s for %s %s", request.remote_addr, request.method, request.path)
        raise NexusError("INVALID_TOKEN", "The API key is not valid.")
    return Sender.service("api")


def _known_service_key(key: str) -> bool:
    # Digests make every comparison the same length; every key is compared, so the time says nothing.
    offered = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
    known = False
    for candidate in current_app.config["NEXUS"].service_api_keys:
        known |= hmac.compare_digest(offered, hashlib.sha256(candidate.encode()).digest())
    return known


def refuse_unstorable_request() -> None:
    """A path, query or form field holding a character no database can store (NUL, a surrogate,
    which percent-encoding can bring) is a VALIDATION_ERROR before any view looks it up.
    JSON bodies are checked where they are decoded (nexus.api.jsonbody)."""
    if UNSTORABLE.search(request.path):
        raise unstorable_refusal("path")
    sources = [("query", request.args)]
    if request.mimetype in _FORMS:
        sources.append(("form", request.form))
    for where, values in sources:
        for name, value in values.items(multi=True):
            if UNSTORABLE.search(name):
                raise unstorable_refusal(where)  # a parameter named with them is named by where it is
            if UNSTORABLE.search(value):
                raise unstorable_refusal(name)


_FORMS = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def register_error_handlers(app: Flask) -> None:
    """JSON errors with catalogue codes for every /api and /health response."""

    app.before_request(refuse_unstorable_request)

    @app.errorhandler(NexusError)
    def _nexus_error(error: NexusError):
        return error_response(error)

    # Registered before the HTTP rate limiter, so it runs after the limiter's own header hook.
    app.after_request(outages.keep_retry_after)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        status = error.code or 500
        code = _HTTP_CODES.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")
        return error_response(NexusError(code, error.description if status < 500 else None, status=status))

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        refused = outages.refuse(error)  # the database or Redis is down: 503, logged once per outage
        if refused is not None:
            outages.rollback(db.session)
            return error_response(refused)
        reference = uuid.uuid4().hex[:12]
        log_event(log, "internal_error", "internal error ref={ref} {method} {path}", level=logging.ERROR,
                  exc_info=error, ref=reference, method=request.method, path=request.path,
                  requestId=request.environ.get("nexus.request_id"))
        return error_response(
            NexusError(
                "INTERNAL_ERROR",
                f"Something went wrong on the server (reference {reference}).",
                details={"reference": reference},
            )
        )


def register_jwt_handlers(jwt: Any) -> None:
    """flask-jwt-extended's refusals in the Nexus error shape."""

    def refuse(code: str, message: str | None = None):
        return error_response(NexusError(code, message))

    jwt.unauthorized_loader(lambda reason: refuse("UNAUTHORIZED", "A bearer token is required."))
    jwt.invalid_token_loader(lambda reason: refuse("INVALID_TOKEN"))
    jwt.expired_token_loader(lambda header, payload: refuse("TOKEN_EXPIRED"))
    jwt.revoked_token_loader(lambda header, payload: refuse("TOKEN_REVOKED"))
    jwt.needs_fresh_token_loader(lambda header, payload: refuse("UNAUTHORIZED", "A fresh login is required."))
    jwt.token_in_blocklist_loader(lambda header, payload: tokens.is_revoked(payload["jti"]))
    jwt.user_lookup_error_loader(lambda header, payload: refuse("INVALID_TOKEN"))



def register_blueprints(app: Flask) -> None:
    """Mount every REST blueprint."""
    from nexus.api import admin, asyncapi, auth, health, notifications, openapi, rooms, users

    api = Blueprint("api", __name__, url_prefix="/api")
    api.register_blueprint(auth.bp)
    api.register_blueprint(admin.bp)
    api.register_blueprint(notifications.bp)
    api.register_blueprint(rooms.bp)
    api.register_blueprint(users.bp)
    api.register_blueprint(asyncapi.bp)  # GET /api/asyncapi.json
    app.register_blueprint(api)
    app.register_blueprint(openapi.bp)  # GET /api/openapi.json, /api/errors, /api/docs
    app.register_blueprint(health.bp)
