"""Messages: send (room or direct), edit, delete, history and catch-up. Events go out after the commit."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from nexus.errors import NexusError
from nexus.extensions import db
from nexus.models import Message, Room, RoomMembership, User, isoformat, utcnow
from nexus.realtime import broadcast, events
from nexus.services import rooms
from nexus.services.rooms import Actor


@dataclass(frozen=True)
class Sent:
    """A stored message and whether this call stored it (False: a retried clientMsgId)."""

    message: dict[str, Any]
    created: bool


def to_wire(message: Message, room: Room, sender: User | Actor | None) -> dict[str, Any]:
    """A message as clients receive it, under every field name clients read (roomId or to, from,
    createdAt and timestamp); the sender is the stored user, or the acting socket's identity when it
    sends (both have username and display_name)."""
    deleted = message.deleted_at is not None
    sender_view = {
        "id": str(message.sender_id),
        "name": sender.display_name if sender else None,
        "username": sender.username if sender else None,
    }
    return {
        "id": str(message.id),
        "seq": message.seq,
        "roomId": None if room.kind == "direct" else room.name,
        "to": None if message.recipient_id is None else str(message.recipient_id),
        "from": str(message.sender_id),
        "sender": sender_view,
        "type": message.type,
        "content": "" if deleted else message.content,
        "attachment": None if deleted else message.attachment,
        "clientMsgId": message.client_msg_id,
        "createdAt": isoformat(message.created_at),
        "timestamp": isoformat(message.created_at),
        "editedAt": isoformat(message.edited_at),
        "deleted": deleted,
    }


def send_to_room(actor: Actor, room_name: str, data: dict[str, Any]) -> Sent:
    """Store a room message, then emit `room_message` to the room."""
    if actor.is_guest:
        raise NexusError("FORBIDDEN", "Guests cannot send messages; authenticate first.")
    room = rooms.find_room(room_name)
    rooms.require_member(actor, room)
    existing = _retried(actor, data.get("client_msg_id"))
    if existing is not None:
        return existing
    message = _store(room, actor, data, recipient_id=None)
    wire = to_wire(message, room, actor)  # the sender's names come with the socket, not from a query
    broadcast.emit_after_commit(
        db.session, events.ROOM_MESSAGE, wire, room=room.name, durable=True, message_id=message.id
    )
    return _commit(actor, data, wire)


def send_direct(actor: Actor, to_user_id: int, data: dict[str, Any], *, sender_sid: str | None) -> Sent:
    """Store a direct message, then emit `new_message` to every socket of both users but the sending one."""
    if actor.is_guest:
        raise NexusError("FORBIDDEN", "Guests cannot send messages; authenticate first.")
    recipient = db.session.get(User, to_user_id)
    if recipient is None:
        raise NexusError("USER_NOT_FOUND")
    if recipient.is_banned:
        raise NexusError("FORBIDDEN", "That user cannot receive messages.")
    existing = _retried(actor, data.get("client_msg_id"))
    if existing is not None:
        return existing
    room = direct_room(actor.user_id, to_user_id)
    message = _store(room, actor, data, recipient_id=to_user_id)
    wire = to_wire(message, room, actor)
    broadcast.emit_after_commit(
        db.session, events.NEW_MESSAGE, wire, room=events.user_room(to_user_id), durable=True, message_id=message.id
    )
    if to_user_id != actor.user_id:  # the sender's other sockets see what they sent
        broadcast.emit_after_commit(
            db.session, events.NEW_MESSAGE, wire, room=events.user_room(actor.user_id), skip_sid=sender_sid,
            durable=True, message_id=message.id,
        )
    return _commit(actor, data, wire)


def edit(actor: Actor, message_id: int, content: str) -> dict[str, Any]:
    """The sender (or an admin) changes a message's text; `message_updated` goes where the message went."""
    message, room = _own_message(actor, message_id)
    if message.deleted_at is not None:
        raise NexusError("CONFLICT", "A deleted message cannot be edited.")
    message.content = content
    message.edited_at = utcnow()
    wire = to_wire(message, room, db.session.get(User, message.sender_id))
    _emit_change(events.MESSAGE_UPDATED, wire, room, message)
    db.session.commit()
    return wire


def delete(actor: Actor, message_id: int) -> dict[str, Any]:
    """The sender (or an admin) deletes a message; history keeps a tombstone; `message_deleted` is sent."""
    message, room = _own_message(actor, message_id)
    if message.deleted_at is None:
        message.deleted_at = utcnow()
    wire = to_wire(message, room, db.session.get(User, message.sender_id))
    _emit_change(events.MESSAGE_DELETED, wire, room, message)
    db.session.commit()
    return wire


def history(
    actor: Actor,
    *,
    room_name: str | None,
    with_user: int | None,
    before: int | None,
    after: int | None,
    limit: int,
    order: str,
    max_limit: int,
) -> dict[str, Any]:
    """A page of a room's (or a direct conversation's) messages by seq, newest or oldest first."""
    room = _history_room(actor, room_name, with_user)
    limit = min(limit, max_limit)
    query = select(Message, User).join(User, User.id == Message.sender_id).where(Message.room_id == room.id)
    if before is not None:
        query = query.where(Message.seq < before)
    if after is not None:
        query = query.where(Message.seq > after)
    # With only `after`, the page starts right after it (oldest first), whatever the order asked.
    ascending = order == "asc" or (after is not None and before is None)
    query = query.order_by(Message.seq.asc() if ascending else Message.seq.desc()).limit(limit + 1)
    rows = db.session.execute(query).all()
    page = [to_wire(message, room, sender) for message, sender in rows[:limit]]
    if ascending != (order == "asc"):
        page.reverse()
    return {
        "roomId": None if room.kind == "direct" else room.name,
        "with": None if with_user is None else str(with_user),
        "messages": page,
        "hasMore": len(rows) > limit,
        "lastSeq": room.last_seq,
    }


def history_page(actor: Actor, query: dict[str, Any], *, max_limit: int) -> dict[str, Any]:
    """`history` from a loaded HistorySchema."""
    return history(
        actor,
        room_name=query.get("room"),
        with_user=query.get("with_user"),
        before=query.get("before"),
        after=query.get("after"),
        limit=query["limit"],
        order=query["order"],
        max_limit=max_limit,
    )


def missed(actor: Actor, room: Room, since: int, bound: int) -> dict[str, Any]:
    """Messages after `since`, oldest first, or `complete: false` when more than `bound` were missed."""
    rooms.require_member(actor, room)
    latest = db.session.scalar(select(Room.last_seq).where(Room.id == room.id)) or 0
    gap = latest - since
    if gap > bound:
        return {"complete": False, "reason": "GAP_TOO_LARGE", "since": since, "lastSeq": latest, "messages": []}
    rows = db.session.execute(
        select(Message, User)
        .join(User, User.id == Message.sender_id)
        .where(Message.room_id == room.id, Message.seq > since, Message.seq <= latest)
        .order_by(Message.seq)
    ).all()
    return {
        "complete": True,
        "since": since,
        "lastSeq": latest,
        "messages": [to_wire(message, room, sender) for message, sender in rows],
    }


#: The most messages read from the database to close one gap in live delivery.
FILL_LIMIT = 500


def between(conversation: str, after: int, before: int) -> list[dict[str, Any]]:
    """The messages of a room (by name, or dm:LOW:HIGH) with after < seq < before, oldest first,
    as clients receive them: what live delivery missed, read to close the gap."""
    if before - after - 1 > FILL_LIMIT:
        raise ValueError(f"a gap of {before - after - 1} messages is left to history paging")
    room = db.session.scalar(select(Room).where(Room.name == conversation))
    if room is None:
        return []
    rows = db.session.execute(
        select(Message, User)
        .join(User, User.id == Message.sender_id)
        .where(Message.room_id == room.id, Message.seq > after, Message.seq < before)
        .order_by(Message.seq)
    ).all()
    return [to_wire(message, room, sender) for message, sender in rows]


def direct_room(user_a: int, user_b: int) -> Room:
    """The conversation room of two users (made on first use; both are its members)."""
    low, high = sorted((user_a, user_b))
    name = f"dm:{low}:{high}"
    room = db.session.scalar(select(Room).where(Room.name == name))
    if room is not None:
        return room
    room = Room(name=name, kind="direct")
    db.session.add(room)
    try:
        with db.session.begin_nested():
            db.session.flush()
            for user_id in {low, high}:
                db.session.add(RoomMembership(room_id=room.id, user_id=user_id, role="member"))
            db.session.flush()
    except IntegrityError:  # the other user made it at the same moment
        return db.session.scalar(select(Room).where(Room.name == name))
    return room


def conversation(actor: Actor, with_user: int) -> Room:
    """The direct conversation room of the actor and another user; NOT_FOUND if they never wrote."""
    if actor.is_guest:
        raise NexusError("FORBIDDEN", "Guests have no direct messages.")
    low, high = sorted((actor.user_id, with_user))
    room = db.session.scalar(select(Room).where(Room.name == f"dm:{low}:{high}"))
    if room is None:
        raise NexusError("NOT_FOUND", "There is no conversation with that user.")
    return room


def _history_room(actor: Actor, room_name: str | None, with_user: int | None) -> Room:
    if (room_name is None) == (with_user is None):
        raise NexusError("VALIDATION_ERROR", "Give exactly one of roomId and with.")
    if actor.is_guest and with_user is not None:
        raise NexusError("FORBIDDEN", "Guests have no direct messages.")
    if with_user is not None:
        low, high = sorted((actor.user_id, with_user))
        room = db.session.scalar(select(Room).where(Room.name == f"dm:{low}:{high}"))
        if room is None:
            if db.session.get(User, with_user) is None:
                raise NexusError("USER_NOT_FOUND")
            return Room(name=f"dm:{low}:{high}", kind="direct", last_seq=0, id=-1)
        return room
    room = rooms.find_room(room_name)
    rooms.require_member(actor, room)
    return room


def _store(room: Room, actor: Actor, data: dict[str, Any], *, recipient_id: int | None) -> Message:
    # Taking the next seq locks the room's row until the commit, so seqs are gapless and ordered.
    seq = db.session.execute(
        update(Room).where(Room.id == room.id).values(last_seq=Room.last_seq + 1).returning(Room.last_seq)
    ).scalar_one()
    room.last_seq = seq
    message = Message(
        room_id=room.id,
        seq=seq,
        sender_id=actor.user_id,
        recipient_id=recipient_id,
        type=data.get("type", "text"),
        content=data["content"],
        attachment=_attachment(data.get("attachment")),
        client_msg_id=data.get("client_msg_id"),
    )
    db.session.add(message)
    db.session.flush()
    return message


def _commit(actor: Actor, data: dict[str, Any], wire: dict[str, Any]) -> Sent:
    try:
        db.session.commit()  # the events queued on the session go out now
    except IntegrityError:
        # The same clientMsgId raced in from another socket: answer with the stored one.
        db.session.rollback()
        existing = _retried(actor, data.get("client_msg_id"))
        if existing is None:
            raise
        return existing
    current_app.extensions["nexus.metrics"].message_stored()
    return Sent(wire, created=True)


def _retried(actor: Actor, client_msg_id: str | None) -> Sent | None:
    if not client_msg_id:
        return None
    row = db.session.execute(
        select(Message, Room)
        .join(Room, Room.id == Message.room_id)
        .where(Message.sender_id == actor.user_id, Message.client_msg_id == client_msg_id)
    ).first()
    if row is None:
        return None
    message, room = row
    relay = broadcast.broadcaster().outbox
    if relay is not None:
        # The first attempt may have died between its commit and its publish: publish it now if
        # its broadcast is not known to have gone out.
        relay.republish_message(message.id)
    return Sent(to_wire(message, room, db.session.get(User, actor.user_id)), created=False)


def _own_message(actor: Actor, message_id: int) -> tuple[Message, Room]:
    if actor.is_guest:
        raise NexusError("FORBIDDEN")
    message = db.session.get(Message, message_id)
    room = db.session.get(Room, message.room_id) if message else None
    if message is None or room is None or not (room.kind != "direct" and rooms.can_read(actor, room)
                                                 or actor.user_id in (message.sender_id, message.recipient_id)):
        raise NexusError("NOT_FOUND", "No such message.")
    if message.sender_id != actor.user_id and not actor.is_admin:
        raise NexusError("FORBIDDEN", "Only the sender or an admin can change a message.")
    return message, room


def _emit_change(event: str, wire: dict[str, Any], room: Room, message: Message) -> None:
    if room.kind == "direct":
        for user_id in {message.sender_id, message.recipient_id}:
            broadcast.emit_after_commit(
                db.session, event, wire, room=events.user_room(user_id), durable=True, message_id=message.id
            )
    else:
        broadcast.emit_after_commit(db.session, event, wire, room=room.name, durable=True, message_id=message.id)


def _attachment(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if not value:
        return None
    names = {"mime_type": "mimeType"}
    return {names.get(key, key): item for key, item in value.items()}


def room_page(*, q: str | None, after: str | None, limit: int) -> dict[str, Any]:
    """Chat rooms in name order with their member counts, the page after a name: {rooms, nextCursor, hasMore}."""
    from nexus.services.users import like_escape

    members = (
        select(func.count(RoomMembership.id)).where(RoomMembership.room_id == Room.id).scalar_subquery()
    )
    query = select(Room, members).where(Room.kind != "direct").order_by(Room.name).limit(limit + 1)
    if q:
        query = query.where(Room.name.ilike(f"%{like_escape(q)}%", escape="\\"))
    if after:
        query = query.where(Room.name > after)
    rows = db.session.execute(query).all()
    page = rows[:limit]
    more = len(rows) > limit
    return {
        "rooms": [{**room.summary(), "memberCount": int(count or 0)} for room, count in page],
        "nextCursor": page[-1][0].name if more else None,
        "hasMore": more,
    }
