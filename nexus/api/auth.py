"""POST /api/auth/login, /refresh, /logout; GET /api/auth/me."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from flask_jwt_extended import get_jwt

from nexus.api import current_user, json_body
from nexus.api.openapi import describe
from nexus.extensions import http_limiter
from nexus.schemas import load
from nexus.schemas.responses import LoginResponseSchema, OkSchema, RefreshResponseSchema, UserResponseSchema
from nexus.schemas.users import LoginSchema, LogoutSchema
from nexus.services import tokens, users

bp = Blueprint("auth", __name__, url_prefix="/auth")


@bp.post("/login")
@describe("Sign in", auth=None, body=LoginSchema, response=LoginResponseSchema,
          errors=("INVALID_CREDENTIALS", "USER_BANNED"))
@http_limiter.limit(lambda: current_app.config["NEXUS"].login_rate_limit)
def login():
    """An access and a refresh token for a username and password (NEXUS_LOGIN_RATE_LIMIT per address)."""
    data = load(LoginSchema(), json_body())
    user = users.verify_credentials(data["username"], data["password"])
    ttl = current_app.config["NEXUS"].access_token_ttl_s
    return jsonify({"success": True, "user": user.public_dict(), **tokens.issue_tokens(user, ttl_s=ttl)})


@bp.post("/refresh")
@describe("A new access token", auth="refresh", response=RefreshResponseSchema)
def refresh():
    """A fresh access token for the refresh token sent as the bearer token."""
    user = current_user(refresh=True)
    ttl = current_app.config["NEXUS"].access_token_ttl_s
    return jsonify({"success": True, "accessToken": tokens.issue_access_token(user), "expiresIn": ttl})


@bp.post("/logout")
@describe("Sign out", body=LogoutSchema, body_required=False, response=OkSchema, errors=("FORBIDDEN",))
def logout():
    """Revoke the bearer token (and `refreshToken` from the body) on every instance; the sockets opened
    with the token get `session_revoked` and close."""
    user = current_user()
    claims = get_jwt()
    data = load(LogoutSchema(), json_body()) if _has_body() else {}
    if data.get("refresh_token"):
        tokens.revoke_encoded(data["refresh_token"], user_id=user.id, expected_type="refresh")
    tokens.revoke(claims)
    # The sockets opened with this token close too, on every instance.
    current_app.extensions["nexus.control"].close_token_sockets(user.id, claims["jti"], "logged out")
    return jsonify({"success": True})


@bp.get("/me")
@describe("Who am I", response=UserResponseSchema)
def me():
    """The account of the bearer token."""
    return jsonify({"success": True, "user": current_user().public_dict()})


def _has_body() -> bool:
    return bool(request.content_length) or request.is_json
