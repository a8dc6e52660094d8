"""Shapes of what the server sends: the fields of success acks and the payloads of server events.

The services build these payloads as plain dicts; these schemas describe them for the event catalogue
(nexus.realtime.catalogue), from which the AsyncAPI document and the TypeScript types are made.
Field names are the wire's; `required` means always present, `allow_none` that it may be null.
"""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from nexus.models import MESSAGE_TYPES, ROLES
from nexus.schemas.chat import AttachmentSchema

STATUSES = ("online", "away", "busy", "offline")
REMOVAL_REASONS = ("removed", "banned", "role_changed")


def _text(**kwargs) -> fields.String:
    return fields.String(required=True, **kwargs)


def _maybe_text(**kwargs) -> fields.String:
    return fields.String(required=True, allow_none=True, **kwargs)


def _id(*, metadata: dict | None = None, **kwargs) -> fields.String:
    """Ids go out as decimal strings."""
    return fields.String(required=True, metadata=metadata or {"description": "a decimal id"}, **kwargs)


def _count() -> fields.Integer:
    return fields.Integer(required=True, validate=validate.Range(min=0))


def _time(**kwargs) -> fields.String:
    return fields.String(metadata={"format": "date-time"}, **kwargs)


# -- people ------------------------------------------------------------------------


class IdentitySchema(Schema):
    """The connected user, as `connected` and `authenticate` show it."""

    id = _id()
    userId = _id()
    username = _text()
    displayName = _maybe_text()
    role = _text(validate=validate.OneOf(ROLES))
    department = _maybe_text()


class ActorSchema(Schema):
    """Who joined, left or types: a user, or a guest (`id` null, `guest` true)."""

    id = fields.String(required=True, allow_none=True)
    username = fields.String()
    displayName = fields.String(allow_none=True)
    name = fields.String(required=True, allow_none=True)
    guest = fields.Boolean(required=True)


class PublicUserSchema(Schema):
    """What other users may see of a user."""

    id = _id()
    username = _text()
    displayName = _maybe_text()
    role = _text(validate=validate.OneOf(ROLES))
    department = _maybe_text()
    status = _text()
    lastSeen = _time(required=True, allow_none=True)


class SenderSchema(Schema):
    """The `from` of a broadcast or notification: a user (id) or a service or the system (id null)."""

    id = fields.String(required=True, allow_none=True)
    name = _text()


class UserInfoSchema(Schema):
    """A user as presence events show them."""

    id = _id()
    username = _text()
    displayName = _maybe_text()
    role = _text(validate=validate.OneOf(ROLES))
    department = _maybe_text()
    status = _text(validate=validate.OneOf(STATUSES))
    lastSeen = _time(required=True, allow_none=True)


class OnlineUserSchema(Schema):
    """One entry of the online list."""

    userId = _id()
    userInfo = fields.Nested(UserInfoSchema, required=True)
    status = _text(validate=validate.OneOf(STATUSES))
    lastSeen = _time(required=True, allow_none=True)
    version = fields.Integer(required=True, metadata={"description": "keep the highest per user"})


# -- messages ----------------------------------------------------------------------


class MessageSenderSchema(Schema):
    id = _id()
    name = _maybe_text()
    username = _maybe_text()


class MessageSchema(Schema):
    """A stored message as clients receive it (a deleted one keeps its place, without content)."""

    id = _id()
    seq = fields.Integer(required=True, metadata={"description": "gapless order within the room"})
    roomId = _maybe_text(metadata={"description": "null for a direct message"})
    to = _maybe_text(metadata={"description": "the recipient's id, for a direct message"})
    from_ = _id(data_key="from")
    sender = fields.Nested(MessageSenderSchema, required=True)
    type = _text(validate=validate.OneOf(MESSAGE_TYPES))
    content = _text()
    attachment = fields.Nested(AttachmentSchema, required=True, allow_none=True)
    clientMsgId = _maybe_text()
    createdAt = _time(required=True)
    timestamp = _time(required=True)
    editedAt = _time(required=True, allow_none=True)
    deleted = fields.Boolean(required=True)


class CatchUpSchema(Schema):
    """What a join with `since` replayed (as `room_message` events, before the ack)."""

    complete = fields.Boolean(required=True, metadata={"description": "false: page the rest with get_history"})
    since = fields.Integer(required=True)
    lastSeq = fields.Integer(required=True)
    count = _count()
    reason = fields.String(metadata={"description": "why it is incomplete (GAP_TOO_LARGE)"})


class RoomMemberSchema(PublicUserSchema):
    memberRole = _text()
    inRoom = fields.Boolean(required=True, metadata={"description": "has a socket in the room now"})


class RoomInfoSchema(Schema):
    id = _id()
    roomId = _text()
    name = _text()
    kind = _text()
    topic = _maybe_text()
    ownerId = _maybe_text()
    lastSeq = fields.Integer(required=True)
    createdAt = _time(required=True, allow_none=True)
    members = fields.List(fields.Nested(RoomMemberSchema), required=True)
    memberCount = _count()
    liveMemberCount = _count()


class NotificationSchema(Schema):
    """A persisted notification of one user."""

    id = _id()
    type = _text()
    title = _text()
    message = _text()
    data = fields.Dict(keys=fields.String(), required=True)
    timestamp = _time(required=True)
    createdAt = _time(required=True)
    read = fields.Boolean(required=True)
    readAt = _time(required=True, allow_none=True)
    from_ = fields.Nested(SenderSchema, data_key="from", required=True)


# -- acks (the fields beside `success: true`) ---------------------------------------


class PongSchema(Schema):
    timestamp = fields.Integer(required=True, metadata={"description": "server time, epoch milliseconds"})
    serverTime = _time(required=True)
    clientTimestamp = fields.Raw(metadata={"description": "the `timestamp` the client sent, when it sent one"})


class AuthenticatedSchema(Schema):
    user = fields.Nested(IdentitySchema, required=True)
    socketId = _text()


class RoomJoinedAckSchema(Schema):
    roomId = _text()
    room = _text()
    kind = _text()
    memberCount = _count()
    lastSeq = fields.Integer(required=True)
    catchUp = fields.Nested(CatchUpSchema, metadata={"description": "present when `since` was given"})


class RoomLeftAckSchema(Schema):
    roomId = _text()
    room = _text()
    memberCount = _count()


class RoomInfoAckSchema(Schema):
    room = fields.Nested(RoomInfoSchema, required=True)
    roomId = _text()


class MessageSentSchema(Schema):
    message = fields.Nested(MessageSchema, required=True)
    messageId = _id()
    duplicate = fields.Boolean(required=True, metadata={"description": "this clientMsgId was stored before"})


class MessageChangedSchema(Schema):
    message = fields.Nested(MessageSchema, required=True)


class HistoryPageSchema(Schema):
    roomId = _maybe_text()
    with_ = _maybe_text(data_key="with")
    messages = fields.List(fields.Nested(MessageSchema), required=True)
    hasMore = fields.Boolean(required=True)
    lastSeq = fields.Integer(required=True)


class MarkedReadSchema(Schema):
    roomId = fields.String(metadata={"description": "for a room"})
    with_ = fields.String(data_key="with", metadata={"description": "for a direct conversation"})
    lastReadSeq = fields.Integer(required=True)


class TypingAckSchema(Schema):
    roomId = _text()


class StatusChangedSchema(Schema):
    """`update_status`'s ack, and `user_updated`."""

    userId = _id()
    status = _text(validate=validate.OneOf(STATUSES))
    lastSeen = _time(required=True, allow_none=True)
    version = fields.Integer(required=True)


class OnlineUsersAckSchema(Schema):
    users = fields.List(fields.Nested(OnlineUserSchema), required=True)


class ActionRecordedSchema(Schema):
    id = _id()
    action = _text()
    createdAt = _time(required=True)


class NotificationReadSchema(Schema):
    notification = fields.Nested(NotificationSchema, required=True)


class BroadcastSentSchema(Schema):
    kind = _text()
    broadcast = fields.Dict(
        required=True,
        metadata={"description": "what was sent: the event's payload with `broadcastId`, or the notification"},
    )


class InstanceStatsSchema(Schema):
    instanceId = _text()
    connections = _count()
    totalConnections = _count()
    byNamespace = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    byTransport = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    usersOnline = _count()
    rooms = _count()
    liveRooms = _count()
    messagesPerSecond = fields.Float(required=True)
    errorsPerSecond = fields.Float(required=True)
    messagesTotal = _count()
    uptime = fields.Float(required=True, metadata={"description": "seconds"})
    memoryRss = fields.Integer(required=True, allow_none=True, metadata={"description": "bytes"})
    timestamp = _time(required=True)


class StatsTotalsSchema(Schema):
    connections = _count()
    totalConnections = _count()
    usersOnline = _count()
    messagesPerSecond = fields.Float(required=True)
    errorsPerSecond = fields.Float(required=True)
    rooms = _count()
    instances = _count()


class StatsSchema(Schema):
    """Every live instance's figures and their totals."""

    totals = fields.Nested(StatsTotalsSchema, required=True)
    instances = fields.List(fields.Nested(InstanceStatsSchema), required=True)
    at = fields.Integer(required=True, metadata={"description": "epoch milliseconds"})


class StatsAckSchema(Schema):
    stats = fields.Nested(StatsSchema, required=True)


class UserDisconnectedSchema(Schema):
    userId = _id()
    disconnectedHere = fields.Integer(required=True, metadata={"description": "sockets closed on this instance"})


class UserChangedSchema(Schema):
    user = fields.Nested(PublicUserSchema, required=True)


# -- server events ------------------------------------------------------------------


class ConnectedSchema(Schema):
    socketId = _text()
    user = fields.Nested(IdentitySchema, required=True, allow_none=True, metadata={"description": "null for a guest"})
    guest = fields.Boolean(required=True)
    unread = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True,
                         metadata={"description": "unread messages by room name"})
    unreadDirect = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True,
                               metadata={"description": "unread direct messages by the other user's id"})
    instanceId = _text()
    serverTime = _time(required=True)
    timestamp = fields.Integer(required=True, metadata={"description": "epoch milliseconds"})


class EventRefusedSchema(Schema):
    """An event sent without an ack failed (or the welcome did: `event` is "connect")."""

    code = _text()
    message = _text()
    event = _text()
    details = fields.Raw()
    retryAfterMs = fields.Integer(validate=validate.Range(min=0))


class RateLimitSchema(Schema):
    event = _text()
    retryAfterMs = fields.Integer(required=True, validate=validate.Range(min=0))
    message = _text(metadata={"description": "a sentence to show"})


class MembershipSchema(Schema):
    """`room_joined` / `room_left`: someone's first socket arrived in, or last socket left, a room."""

    roomId = _text()
    room = _text()
    user = fields.Nested(ActorSchema, required=True)
    memberCount = _count()


class RemovedFromRoomSchema(Schema):
    roomId = _text()
    room = _text()
    reason = _text(validate=validate.OneOf(REMOVAL_REASONS))
    lastSeq = fields.Integer(metadata={"description": "the room's last message before the removal"})


class MessagesMissedSchema(Schema):
    roomId = _maybe_text()
    afterSeq = fields.Integer(required=True)
    beforeSeq = fields.Integer(required=True)
    with_ = fields.List(fields.String(allow_none=True), data_key="with",
                        metadata={"description": "the two users, for a direct conversation"})


class TypingEventSchema(Schema):
    roomId = _text()
    room = _text()
    user = fields.Nested(ActorSchema, required=True)
    userId = _maybe_text()
    isTyping = fields.Boolean(required=True)


class UserOnlineSchema(Schema):
    userId = _id()
    userInfo = fields.Nested(UserInfoSchema, required=True)
    version = fields.Integer(required=True)


class UserOfflineSchema(Schema):
    userId = _id()
    lastSeen = _time(allow_none=True)
    version = fields.Integer(required=True)


class ProfileChangesSchema(Schema):
    displayName = fields.String(allow_none=True)
    department = fields.String(allow_none=True)


class ProfileUpdatedSchema(Schema):
    userId = _id()
    data = fields.Nested(ProfileChangesSchema, required=True)


class SystemMessageSchema(Schema):
    type = _text(validate=validate.OneOf(("system", "room")))
    room = fields.String(metadata={"description": "the chat room, for type room"})
    message = _text()
    timestamp = _time(required=True)
    from_ = fields.Nested(SenderSchema, data_key="from", required=True)
    broadcastId = _id(metadata={"description": "the broadcast's record (GET /api/admin/broadcasts)"})


class AdminMessageSchema(Schema):
    type = _text(validate=validate.OneOf(("admin",)))
    message = _text()
    timestamp = _time(required=True)
    from_ = fields.Nested(SenderSchema, data_key="from", required=True)
    broadcastId = _id(metadata={"description": "the broadcast's record (GET /api/admin/broadcasts)"})


class DepartmentMessageSchema(Schema):
    type = _text(validate=validate.OneOf(("department",)))
    department = _text()
    message = _text()
    timestamp = _time(required=True)
    from_ = fields.Nested(SenderSchema, data_key="from", required=True)
    broadcastId = _id(metadata={"description": "the broadcast's record (GET /api/admin/broadcasts)"})


class SessionRevokedSchema(Schema):
    reason = _text()


class ServerShutdownSchema(Schema):
    reconnectAfterMs = fields.Integer(required=True, validate=validate.Range(min=0))
