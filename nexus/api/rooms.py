"""Rooms over REST: list, create, information, members, history."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from nexus.api import current_actor, json_body
from nexus.models import Room
from nexus.schemas import load
from nexus.schemas.chat import HistorySchema, MemberAddSchema, RoomCreateSchema
from nexus.services import messages, rooms

bp = Blueprint("rooms", __name__)


def _room(ref: str) -> Room:
    return rooms.get_room(int(ref)) if ref.isdigit() else rooms.find_room(ref)


@bp.get("/rooms")
def list_rooms():
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
def create_room():
    data = load(RoomCreateSchema(), json_body())
    room = rooms.create(current_actor(), data["name"], data["kind"], data.get("topic"))
    return jsonify({"success": True, "room": room.summary()}), 201


@bp.get("/rooms/<ref>")
def room_info(ref: str):
    actor = current_actor()
    info = rooms.info(actor, _room(ref), current_app.extensions["nexus.chat"].live)
    return jsonify({"success": True, "room": info})


@bp.get("/rooms/<ref>/messages")
def room_messages(ref: str):
    actor = current_actor()
    room = _room(ref)
    return _history(actor, {**request.args.to_dict(), "roomId": room.name})


@bp.get("/conversations")
def list_conversations():
    return jsonify({"success": True, "conversations": rooms.conversations(current_actor())})


@bp.get("/conversations/<int:user_id>/messages")
def direct_messages(user_id: int):
    return _history(current_actor(), {**request.args.to_dict(), "with": user_id})


@bp.post("/rooms/<ref>/members")
def add_member(ref: str):
    data = load(MemberAddSchema(), json_body())
    member = rooms.add_member(current_actor(), _room(ref), data["user_id"])
    return jsonify({"success": True, "userId": str(member.user_id), "role": member.role}), 201


@bp.delete("/rooms/<ref>/members/<int:user_id>")
def remove_member(ref: str, user_id: int):
    """The member's sockets leave the room on every instance before this answers; `lastSeq` is the
    room's last message before the removal (nothing after it reaches them)."""
    last_seq = rooms.remove_member(current_actor(), _room(ref), user_id)
    return jsonify({"success": True, "userId": str(user_id), "lastSeq": last_seq})


def _history(actor, args):
    query = load(HistorySchema(), args)
    page = messages.history_page(actor, query, max_limit=current_app.config["NEXUS"].history_max_limit)
    return jsonify({"success": True, **page})
