"""POST /api/auth/login, /refresh, /logout; GET /api/auth/me."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from flask_jwt_extended import get_jwt

from nexus.api import current_user, json_body
from nexus.extensions import http_limiter
from nexus.schemas import load
from nexus.schemas.users import LoginSchema, LogoutSchema
from nexus.services import tokens, users

bp = Blueprint("auth", __name__, url_prefix="/auth")


@bp.post("/login")
@http_limiter.limit(lambda: current_app.config["NEXUS"].login_rate_limit)
def login():
    data = load(LoginSchema(), json_body())
    user = users.verify_credentials(data["username"], data["password"])
    ttl = current_app.config["NEXUS"].access_token_ttl_s
    return jsonify({"success": True, "user": user.public_dict(), **tokens.issue_tokens(user, ttl_s=ttl)})


@bp.post("/refresh")
def refresh():
    user = current_user(refresh=True)
    ttl = current_app.config["NEXUS"].access_token_ttl_s
    return jsonify({"success": True, "accessToken": tokens.issue_access_token(user), "expiresIn": ttl})


@bp.post("/logout")
def logout():
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
def me():
    return jsonify({"success": True, "user": current_user().public_dict()})


def _has_body() -> bool:
    return bool(request.content_length) or request.is_json
