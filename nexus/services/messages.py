"""Messages: send (room or direct), edit, delete, history and catch-up. Events go out after the commit.

Sent messages are written by group commit (nexus.services.commits): a message joins the others
arriving at the same moment, and the batch is checked (room, membership, clientMsgId: each message
fails alone) and written in one transaction (per room one seq allocation, gapless in arrival order;
the messages, their outbox entries and the senders' read markers); each sender is answered after that
commit, and the events go out after it as for any other change. NEXUS_GROUP_COMMIT_MS=0 writes each
message in a transaction of its own.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Sequence

from flask import current_app
from sqlalchemy import case, func, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from nexus import outages
from nexus.errors import NexusError
from nexus.extensions import db
from nexus.models import Message, Room, RoomMembership, User, isoformat, utcnow
from nexus.realtime import broadcast, events
from nexus.services import rooms
from nexus.services.commits import GroupCommit
from nexus.services.rooms import Actor

#: The most messages written in one transaction.
MAX_BATCH = 200
_COMMITTER_KEY = "nexus.group_commit"


@dataclass(frozen=True)
class Sent:
    """A stored message and whether this call stored it (False: a retried clientMsgId)."""

    message: dict[str, Any]
    created: bool


class RoomRef(NamedTuple):
    """What a message's wire form needs of its room, kept apart from any database session."""

    id: int
    name: str
    kind: str


def to_wire(message: Message, room: Room | RoomRef, sender: User | Actor | None) -> dict[str, Any]:
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
    committer = _group_commit()
    if committer is not None:  # the room, membership and clientMsgId checks run with the batch
        return _submit(committer, _Outgoing(
            room_name, None, actor, data, None, events.ROOM_MESSAGE, ((room_name, None),)
        ))
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
    targets: list[tuple[str, str | None]] = [(events.user_room(to_user_id), None)]
    if to_user_id != actor.user_id:  # the sender's other sockets see what they sent
        targets.append((events.user_room(actor.user_id), sender_sid))
    committer = _group_commit()
    if committer is not None:
        room_ref = _existing_direct_room(actor.user_id, to_user_id)
        if room_ref is not None:  # a first message makes its conversation's room, in a transaction of its own
            return _submit(committer, _Outgoing(
                room_ref.name, room_ref, actor, data, to_user_id, events.NEW_MESSAGE, tuple(targets)
            ))
    room = direct_room(actor.user_id, to_user_id)
    message = _store(room, actor, data, recipient_id=to_user_id)
    wire = to_wire(message, room, actor)
    for target, skip_sid in targets:
        broadcast.emit_after_commit(
            db.session, events.NEW_MESSAGE, wire, room=target, skip_sid=skip_sid, durable=True, message_id=message.id
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
    rooms.advance_read_markers({(room.id, actor.user_id): seq})  # what one sends is never unread for one
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


# -- group commit ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Outgoing:
    """A message waiting for its batch: its room (by name until the batch has checked it), its
    sender, and where its event goes."""

    room_name: str
    room: RoomRef | None
    actor: Actor
    data: dict[str, Any]
    recipient_id: int | None
    event: str
    targets: tuple[tuple[str, str | None], ...]  # (socket room, the sending socket left out of it)


#: A batch's answer for a message whose clientMsgId another transaction stored first: the sender
#: answers with the stored message, as for any retried send.
_RETRIED = object()


def _group_commit() -> GroupCommit[_Outgoing] | None:
    """This process's committer of sent messages (None: one transaction per message)."""
    settings = current_app.config["NEXUS"]
    if settings.group_commit_ms <= 0:
        return None
    committer = current_app.extensions.get(_COMMITTER_KEY)
    if committer is None or committer.pid != os.getpid():
        committer = GroupCommit(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            _write_batch,
            window_s=settings.group_commit_ms / 1000,
            max_batch=MAX_BATCH,
            green=(settings.async_mode or "gevent") == "gevent",
        )
        current_app.extensions[_COMMITTER_KEY] = committer
    return committer


def _submit(committer: GroupCommit[_Outgoing], outgoing: _Outgoing) -> Sent:
    # Whatever the caller read so far ends its transaction here, so that no connection is held while
    # the sender waits (anything else in the caller's session is committed, as it would have been
    # with the message). A handler that has not touched the database has no session to end.
    if db.session.registry.has() and db.session.registry().in_transaction():
        db.session.commit()
    outcome = committer.submit(outgoing)
    if outcome is _RETRIED:
        existing = _retried(outgoing.actor, outgoing.data.get("client_msg_id"))
        if existing is None:
            raise NexusError("CONFLICT", "That clientMsgId was in use a moment ago; send the message again.")
        return existing
    if outcome.created:
        current_app.extensions["nexus.metrics"].message_stored()
    return outcome


def _existing_direct_room(user_a: int, user_b: int) -> RoomRef | None:
    low, high = sorted((user_a, user_b))
    row = db.session.execute(select(Room.id, Room.name, Room.kind).where(Room.name == f"dm:{low}:{high}")).first()
    return None if row is None else RoomRef(row.id, row.name, row.kind)


def _client_key(item: _Outgoing) -> tuple[int, str] | None:
    client_msg_id = item.data.get("client_msg_id")
    return (item.actor.user_id, client_msg_id) if client_msg_id and item.actor.user_id is not None else None


def _write_batch(batch: list[_Outgoing]) -> list[Any]:
    """Check and write messages in one transaction of the committer's session: a Sent, an exception
    or _RETRIED for each, in batch order."""
    outcomes: list[Any] = [None] * len(batch)
    try:
        checked = _check(batch, outcomes)
        taken = _stored_client_keys([item for item in checked if item is not None])
    except Exception:  # every message of the batch fails with it; the session is ready for the next one
        outages.rollback(db.session)
        raise
    # A clientMsgId sent twice in one batch is stored once; the later copies answer with the first.
    leaders: dict[tuple[int, str], int] = {}
    copies: dict[int, int] = {}
    pending: list[int] = []
    for index, item in enumerate(checked):
        if item is None:
            continue
        key = _client_key(item)
        if key is None:
            pending.append(index)
        elif key in taken:
            outcomes[index] = _RETRIED  # a retry of a message already stored
        elif key in leaders:
            copies[index] = leaders[key]
        else:
            leaders[key] = index
            pending.append(index)
    _write_together(checked, pending, outcomes)  # type: ignore[arg-type]
    if db.session().in_transaction():  # nothing was left to write: only the checks' reads to end
        outages.rollback(db.session)
    for index, leader in copies.items():
        first = outcomes[leader]
        outcomes[index] = Sent(first.message, created=False) if isinstance(first, Sent) else first
    return outcomes


def _check(batch: list[_Outgoing], outcomes: list[Any]) -> list[_Outgoing | None]:
    """The room messages' checks of rooms.find_room and rooms.require_member, made for a whole batch
    in two queries (the rooms, then the memberships that decide: rooms.participation_refusal). A
    message that fails gets its error in `outcomes` (None in the answer); the others come back with
    their room."""
    names = {item.room_name for item in batch if item.room is None}
    found: dict[str, RoomRef] = {}
    if names:
        rows = db.session.execute(select(Room.id, Room.name, Room.kind).where(Room.name.in_(sorted(names)))).all()
        found = {row.name: RoomRef(row.id, row.name, row.kind) for row in rows if row.kind != "direct"}
    asked = {
        (found[item.room_name].id, item.actor.user_id)
        for item in batch
        if item.room is None and item.room_name in found and found[item.room_name].kind != "public"
        and not item.actor.is_admin
    }
    members: set[tuple[int, int]] = set()
    if asked:
        rows = db.session.execute(
            select(RoomMembership.room_id, RoomMembership.user_id)
            .where(tuple_(RoomMembership.room_id, RoomMembership.user_id).in_(sorted(asked)))  # type: ignore[arg-type]
        ).all()
        members = {(row.room_id, row.user_id) for row in rows}
    checked: list[_Outgoing | None] = []
    for index, item in enumerate(batch):
        if item.room is not None:
            checked.append(item)
            continue
        room = found.get(item.room_name)
        refusal = rooms.room_not_found(item.room_name) if room is None else rooms.participation_refusal(
            item.actor, room.kind, is_member=(room.id, item.actor.user_id) in members)
        if refusal is not None:
            outcomes[index] = refusal
            checked.append(None)
        else:
            checked.append(replace(item, room=room))
    return checked


def _write_together(batch: list[_Outgoing], indexes: list[int], outcomes: list[Any]) -> None:
    """Store batch[i] for i in indexes in one transaction, setting outcomes[i] for each."""
    while indexes:
        try:
            written = _insert(batch, indexes)
        except IntegrityError as exc:
            outages.rollback(db.session)
            # Another socket or instance stored one of these clientMsgIds meanwhile: those are answered
            # with the stored message, the rest are written again without them.
            taken = _stored_client_keys([batch[index] for index in indexes])
            clashing = {index for index in indexes if _client_key(batch[index]) in taken}
            if not clashing:
                _write_apart(batch, indexes, outcomes, exc)
                return
            for index in clashing:
                outcomes[index] = _RETRIED
            indexes = [index for index in indexes if index not in clashing]
            continue
        except Exception as exc:
            outages.rollback(db.session)
            _write_apart(batch, indexes, outcomes, exc)
            return
        try:
            db.session.commit()  # the events queued on the session go out now
        except Exception as exc:
            # Whether the commit happened is not known here: nothing is written again, and a client
            # that retries with its clientMsgId gets the message if it was stored.
            outages.rollback(db.session)
            for index in indexes:
                outcomes[index] = exc
            return
        for index, outcome in written.items():
            outcomes[index] = outcome
        return


def _write_apart(batch: list[_Outgoing], indexes: list[int], outcomes: list[Any], failure: Exception) -> None:
    """The batch failed before its commit. An outage fails every message of it; anything else may be
    one message's fault, so each is written alone and only that one fails."""
    if len(indexes) == 1 or outages.dependency_of(failure) is not None:
        for index in indexes:
            outcomes[index] = failure
        return
    for position, index in enumerate(indexes):
        _write_together(batch, [index], outcomes)
        outcome = outcomes[index]
        if isinstance(outcome, Exception) and outages.dependency_of(outcome) is not None:
            for rest in indexes[position + 1:]:
                outcomes[rest] = outcome
            return


def _insert(batch: list[_Outgoing], indexes: list[int]) -> dict[int, Any]:
    """Allocate seqs and add the messages and their events to the session (flushed, not committed)."""
    by_room: dict[int, list[int]] = {}
    for index in indexes:
        by_room.setdefault(batch[index].room.id, []).append(index)  # type: ignore[union-attr]
    outcomes: dict[int, Any] = {}
    stored: dict[int, Message] = {}
    last_seqs = _allocate(by_room)
    for room_id, members in by_room.items():
        last = last_seqs.get(room_id)
        if last is None:  # deleted since its senders' checks
            for index in members:
                outcomes[index] = (NexusError("USER_NOT_FOUND") if batch[index].room.kind == "direct"
                                   else NexusError("ROOM_NOT_FOUND", f"No room {batch[index].room_name!r}."))
            continue
        for offset, index in enumerate(members):
            item = batch[index]
            stored[index] = Message(
                room_id=room_id,
                seq=last - len(members) + 1 + offset,
                sender_id=item.actor.user_id,
                recipient_id=item.recipient_id,
                type=item.data.get("type", "text"),
                content=item.data["content"],
                attachment=_attachment(item.data.get("attachment")),
                client_msg_id=item.data.get("client_msg_id"),
            )
    order = sorted(stored)
    db.session.add_all([stored[index] for index in order])
    db.session.flush()
    # Each sender's read marker moves to their last message of the batch, in the same transaction, so
    # no unread count ever includes it; never back, whatever a mark_read at the same moment writes.
    markers: dict[tuple[int, int], int] = {}
    for index in order:
        message = stored[index]
        key = (message.room_id, message.sender_id)
        markers[key] = max(markers.get(key, 0), message.seq)
    rooms.advance_read_markers(markers)
    for index in order:  # events in arrival order: each room's in seq order
        item, message = batch[index], stored[index]
        wire = to_wire(message, item.room, item.actor)
        for target, skip_sid in item.targets:
            broadcast.emit_after_commit(
                db.session, item.event, wire, room=target, skip_sid=skip_sid, durable=True, message_id=message.id
            )
        outcomes[index] = Sent(wire, created=True)
    return outcomes


def _allocate(by_room: dict[int, list[int]]) -> dict[int, int]:
    """Take len(indexes) seqs in each room: {room id: its new last_seq} (a room missing is left out).

    The update locks the rooms' rows until the commit, so seqs stay gapless and in arrival order.
    With several rooms their rows are locked first in id order, so that two committers (two
    instances) never wait on each other in a cycle."""
    ids = sorted(by_room)
    if len(ids) > 1:
        db.session.execute(select(Room.id).where(Room.id.in_(ids)).order_by(Room.id).with_for_update()).all()
    step = (case({room_id: len(by_room[room_id]) for room_id in ids}, value=Room.id) if len(ids) > 1
            else len(by_room[ids[0]]))
    rows = db.session.execute(
        update(Room).where(Room.id.in_(ids)).values(last_seq=Room.last_seq + step)
        .returning(Room.id, Room.last_seq).execution_options(synchronize_session=False)
    ).all()
    return {row.id: row.last_seq for row in rows}


def _stored_client_keys(items: Sequence[_Outgoing]) -> set[tuple[int, str]]:
    keys = {key for key in map(_client_key, items) if key is not None}
    if not keys:
        return set()
    rows = db.session.execute(
        select(Message.sender_id, Message.client_msg_id)
        .where(tuple_(Message.sender_id, Message.client_msg_id).in_(sorted(keys)))
    ).all()
    return {(row.sender_id, row.client_msg_id) for row in rows}


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
