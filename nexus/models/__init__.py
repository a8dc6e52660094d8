"""The persistent model: one module per aggregate."""
from nexus.models._types import iso_from_epoch_ms, isoformat, utcnow
from nexus.models.actions import UserAction
from nexus.models.broadcasts import BROADCAST_KINDS, Broadcast
from nexus.models.messages import MESSAGE_TYPES, Message
from nexus.models.notifications import Notification
from nexus.models.outbox import OutboxEntry
from nexus.models.rooms import ROOM_KINDS, Room, RoomMembership
from nexus.models.tokens import RevokedToken
from nexus.models.users import ROLES, STATUSES, User

__all__ = [
    "BROADCAST_KINDS",
    "MESSAGE_TYPES",
    "ROLES",
    "ROOM_KINDS",
    "STATUSES",
    "Broadcast",
    "Message",
    "Notification",
    "OutboxEntry",
    "RevokedToken",
    "Room",
    "RoomMembership",
    "User",
    "UserAction",
    "iso_from_epoch_ms",
    "isoformat",
    "utcnow",
]
