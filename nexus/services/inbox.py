"""What a user has waiting when a socket of theirs connects: unread counts per chat room and per direct
conversation, and unread notifications, oldest first.

Every new connection is told these, so a reconnect storm asks for thousands at once: the sockets
that connect at the same moment are read together, with two statements on one pooled connection in
autocommit (nexus.services.reads, nexus.services.batching), whatever their number. The counts come
from each room's last seq less the member's read marker, never from the messages; sending a message
moves the sender's marker to it in the same transaction (nexus.services.messages), so what a user sent
is never unread for them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from nexus.extensions import per_app
from nexus.models import Broadcast, Notification, Room, RoomMembership
from nexus.services import notifications, reads
from nexus.services.batching import Batcher
from nexus.services.rooms import other_user

#: Unread notifications redelivered to a new connection at most.
MAX_REDELIVERED = 100


@dataclass
class Inbox:
    """One user's unread counts (by room name; by the other user's id) and unread notifications."""

    unread: dict[str, int] = field(default_factory=dict)
    unread_direct: dict[str, int] = field(default_factory=dict)
    notifications: list[dict[str, Any]] = field(default_factory=list)


class InboxReader:
    """Reads the inboxes of the users whose sockets connect at the same moment together. `read`
    returns what was committed when the read began, which is after it was called: call it once the
    socket is in its user room, so that what commits meanwhile is read or pushed to it."""

    def __init__(self) -> None:
        self._reads: Batcher[int, Inbox] = Batcher(read_inboxes)

    def read(self, user_id: int) -> Inbox:
        return self._reads.submit(user_id)


def read_inboxes(user_ids: list[int]) -> list[Inbox]:
    """The inboxes of some users (one per id, in the same order), with two statements."""
    wanted = set(user_ids)
    inboxes = {user_id: Inbox() for user_id in wanted}
    counts = (
        select(RoomMembership.user_id, Room.name, Room.kind, Room.last_seq - RoomMembership.last_read_seq)
        .join(Room, Room.id == RoomMembership.room_id)
        .where(RoomMembership.user_id.in_(wanted), Room.last_seq > RoomMembership.last_read_seq)
    )
    ranked = (
        select(Notification.id, func.row_number().over(partition_by=Notification.user_id, order_by=Notification.id)
               .label("rank"))
        .where(Notification.user_id.in_(wanted), Notification.read_at.is_(None))
        .subquery()
    )
    pending = (
        select(Notification.user_id, *notifications.WIRE_COLUMNS, Broadcast.sender_user_id, Broadcast.sender_label)
        .join(ranked, ranked.c.id == Notification.id)
        .outerjoin(Broadcast, Broadcast.notification_id == Notification.id)
        .where(ranked.c.rank <= MAX_REDELIVERED)
        .order_by(Notification.user_id, Notification.id)
    )
    with reads.autocommit() as connection:
        for user_id, name, kind, count in connection.execute(counts):
            inbox = inboxes[user_id]
            if kind == "direct":
                inbox.unread_direct[str(other_user(name, user_id))] = int(count)
            else:
                inbox.unread[name] = int(count)
        for row in connection.execute(pending):
            inboxes[row.user_id].notifications.append(notifications.wire_of_columns(row))
    return [inboxes[user_id] for user_id in user_ids]


def reader(app: Any = None) -> InboxReader:
    """This process's InboxReader (one per app, made on first use)."""
    return per_app("nexus.inboxes", InboxReader, app)
