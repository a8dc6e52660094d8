"""Rooms over REST: list, create, information, members, history."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from nexus.api import current_actor, json_body
from nexus.api.openapi import describe
from nexus.errors import NexusError
from nexus.models import Room
from nexus.schemas import MAX_ID, load
from nexus.schemas.chat import HistorySchema, MemberAddSchema, RoomCreateSchema
from nexus.schemas.responses import (
    ConversationListSchema,
    MemberAddedSchema,
    MemberRemovedSchema,
    MessagePageSchema,
    RoomCreatedSchema,
    RoomInfoResponseSchema,
    RoomListSchema,
)
from nexus.services import messages, rooms

bp = Blueprint("rooms", __name__)

#: The query of the history routes (the room or the other user is in the path).
HISTORY_QUERY = HistorySchema(exclude=("room", "with_user"))
ROOM_REF = {"description": "the room's id, or its name", "examples": ["general"]}


def _room(ref: str) -> Room:
    # ASCII digits only: str.isdigit() is also true of "³", which int() refuses.
    return rooms.get_room(int(ref)) if ref.isascii() and ref.isdigit() else rooms.find_room(ref)


@bp.get("/rooms")
@describe("Rooms I can see", response=RoomListSchema)
def list_rooms():
    """Public rooms and the private rooms the caller is a member of (all of them for admins), with unread counts."""
    actor = current_actor()
    unread = rooms.unread_counts(actor.user_id)
    live = current_app.extensions["nexus.chat"].live
    return jsonify(
        {
            "success": True,
            "rooms": [
                {
                    **room.summary(),
                    "member": member is not None,
                    "unread": unread.get(room.name, 0),
                    "liveMemberCount": len(live.members(room.name)),
                }
                for room, member in rooms.visible_rooms(actor)
            ],
        }
    )


@bp.post("/rooms")
@describe("Create a room", body=RoomCreateSchema, response=RoomCreatedSchema, status=201,
          errors=("FORBIDDEN", "CONFLICT", "LIMIT_REACHED"))
def create_room():
    data = load(RoomCreateSchema(), json_body())
    room = rooms.create(current_actor(), data["name"], data["kind"], data.get("topic"))
    return jsonify({"success": True, "room": room.summary()}), 201


@bp.get("/rooms/<ref>")
@describe("A room", response=RoomInfoResponseSchema, path={"ref": ROOM_REF}, errors=("ROOM_NOT_FOUND", "FORBIDDEN"))
def room_info(ref: str):
    """Name, kind, members with their status, member counts."""
    actor = current_actor()
    info = rooms.info(actor, _room(ref), current_app.extensions["nexus.chat"].live)
    return jsonify({"success": True, "room": info})


@bp.get("/rooms/<ref>/messages")
@describe("A room's messages", query=HISTORY_QUERY, response=MessagePageSchema, path={"ref": ROOM_REF},
          errors=("ROOM_NOT_FOUND", "FORBIDDEN"))
def room_messages(ref: str):
    """A page of messages by `seq` (newest first by default; `after` alone pages forward)."""
    actor = current_actor()
    room = _room(ref)
    return _history(actor, {**request.args.to_dict(), "roomId": room.name})


@bp.get("/conversations")
@describe("My direct conversations", response=ConversationListSchema, errors=("FORBIDDEN",))
def list_conversations():
    """Direct conversations, most recently started first, with the other user and unread counts."""
    return jsonify({"success": True, "conversations": rooms.conversations(current_actor())})


@bp.get("/conversations/<int:user_id>/messages")
@describe("A direct conversation's messages", query=HISTORY_QUERY, response=MessagePageSchema,
          path={"user_id": "the other user's id"}, errors=("USER_NOT_FOUND", "FORBIDDEN"))
def direct_messages(user_id: int):
    """A page of the messages between the caller and another user, by `seq`."""
    return _history(current_actor(), {**request.args.to_dict(), "with": user_id})


@bp.post("/rooms/<ref>/members")
@describe("Add a member", body=MemberAddSchema, response=MemberAddedSchema, status=201, path={"ref": ROOM_REF},
          errors=("ROOM_NOT_FOUND", "USER_NOT_FOUND", "FORBIDDEN", "CONFLICT"))
def add_member(ref: str):
    """The owner or an admin adds a member to a private room (again: no change)."""
    data = load(MemberAddSchema(), json_body())
    member = rooms.add_member(current_actor(), _room(ref), data["user_id"])
    return jsonify({"success": True, "userId": str(member.user_id), "role": member.role}), 201


@bp.delete("/rooms/<ref>/members/<int:user_id>")
@describe("Remove a member", response=MemberRemovedSchema, path={"ref": ROOM_REF, "user_id": "the member's id"},
          errors=("ROOM_NOT_FOUND", "FORBIDDEN", "CONFLICT"))
def remove_member(ref: str, user_id: int):
    """The member's sockets leave the room on every instance before this answers; `lastSeq` is the
    room's last message before the removal (nothing after it reaches them)."""
    actor, room = current_actor(), _room(ref)
    if user_id > MAX_ID:  # no account has such an id (and the database would refuse the number)
        raise NexusError("NOT_FOUND", "That user is not a member.")
    last_seq = rooms.remove_member(actor, room, user_id)
    return jsonify({"success": True, "userId": str(user_id), "lastSeq": last_seq})


def _history(actor, args):
    query = load(HistorySchema(), args)
    page = messages.history_page(actor, query, max_limit=current_app.config["NEXUS"].history_max_limit)
    return jsonify({"success": True, **page})
