"""Users over REST: public profiles, search, and editing one's own profile."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from nexus.api import current_actor, json_body
from nexus.api.openapi import describe
from nexus.schemas import load
from nexus.schemas.responses import OnlineUsersSchema, UserPageSchema, UserResponseSchema
from nexus.schemas.users import ProfileUpdateSchema, UserSearchSchema
from nexus.services import users

bp = Blueprint("users", __name__)


@bp.get("/users")
@describe("Find users", query=UserSearchSchema, response=UserPageSchema)
def search_users():
    """?q= (literal, any case) &limit= (1..50, default 20) &cursor=: keyset pages by username; cursor=nextCursor."""
    actor = current_actor()
    query = load(UserSearchSchema(), request.args.to_dict())
    page = users.search(actor, query["q"], limit=query["limit"], cursor=query.get("cursor"))
    return jsonify({"success": True, **page})


@bp.get("/users/online")
@describe("Who is online", response=OnlineUsersSchema)
def online_users():
    """Who is online now, on every instance (users who chose to appear offline are left out)."""
    current_actor()
    listed = current_app.extensions["nexus.presence"].online_users()
    return jsonify({"success": True, "users": listed, "count": len(listed)})


@bp.get("/users/<int:user_id>")
@describe("A user", response=UserResponseSchema, errors=("USER_NOT_FOUND",))
def profile(user_id: int):
    """A user's public profile."""
    return jsonify({"success": True, "user": users.visible_user(current_actor(), user_id).public_dict()})


@bp.patch("/users/me")
@describe("Change my profile", body=ProfileUpdateSchema, response=UserResponseSchema)
def update_me():
    """Change one's own displayName and/or department."""
    actor = current_actor()
    changes = load(ProfileUpdateSchema(), json_body())
    return jsonify({"success": True, "user": users.update_profile(actor.user_id, changes).public_dict()})
