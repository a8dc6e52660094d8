"""What the REST API answers, as marshmallow schemas: they are never used to load anything, only to
describe the responses in the OpenAPI document (nexus.api.openapi), where each one becomes a
component. A field the server sends must be declared here: the document allows no other."""
from __future__ import annotations

from marshmallow import INCLUDE, RAISE, Schema, fields, validate

from nexus.errors import CATALOGUE
from nexus.models import BROADCAST_KINDS, ROLES

STATUSES = ("online", "away", "busy", "offline")


def _id(**kwargs) -> fields.String:
    """Ids go out as strings (JavaScript numbers cannot hold every 64-bit integer)."""
    return fields.String(metadata={"description": "a numeric id, as a string", "example": "42"}, **kwargs)


def _time(**kwargs) -> fields.String:
    return fields.String(metadata={"format": "date-time", "example": "2026-05-04T12:00:00.000Z"}, **kwargs)


def _nullable_id() -> fields.String:
    return _id(required=True, allow_none=True)


class OkSchema(Schema):
    success = fields.Boolean(required=True, validate=validate.Equal(True))


# -- errors ------------------------------------------------------------------------------------


class ErrorObjectSchema(Schema):
    """The `error` of every refusal: a code of the error catalogue (GET /api/errors) and a message."""

    code = fields.String(required=True, validate=validate.OneOf(sorted(CATALOGUE)))
    message = fields.String(required=True)
    retryAfterMs = fields.Integer(metadata={"description": "with RATE_LIMITED and UNAVAILABLE: when to retry"})
    details = fields.Raw(
        metadata={"description": "field messages of a VALIDATION_ERROR, the reference of an INTERNAL_ERROR, "
                  "retryAfterMs of a retry hint"}
    )


class ErrorResponseSchema(Schema):
    success = fields.Boolean(required=True, validate=validate.Equal(False))
    error = fields.Nested(ErrorObjectSchema, required=True)


class CatalogueEntrySchema(Schema):
    code = fields.String(required=True)
    status = fields.Integer(required=True, metadata={"description": "the HTTP status REST answers it with"})
    message = fields.String(required=True, metadata={"description": "what it means (the default message)"})


class ErrorCatalogueSchema(OkSchema):
    errors = fields.List(fields.Nested(CatalogueEntrySchema), required=True)


# -- accounts ----------------------------------------------------------------------------------


class UserSchema(Schema):
    """A user as others may see them."""

    id = _id(required=True)
    username = fields.String(required=True)
    displayName = fields.String(required=True, allow_none=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    department = fields.String(required=True, allow_none=True)
    status = fields.String(required=True, allow_none=True)
    lastSeen = _time(required=True, allow_none=True)


class UserResponseSchema(OkSchema):
    user = fields.Nested(UserSchema, required=True)


class LoginResponseSchema(OkSchema):
    user = fields.Nested(UserSchema, required=True)
    accessToken = fields.String(required=True)
    refreshToken = fields.String(required=True)
    tokenType = fields.String(required=True, validate=validate.Equal("Bearer"))
    expiresIn = fields.Integer(required=True, metadata={"description": "the access token's lifetime in seconds"})


class RefreshResponseSchema(OkSchema):
    accessToken = fields.String(required=True)
    expiresIn = fields.Integer(required=True)


class UserPageSchema(OkSchema):
    users = fields.List(fields.Nested(UserSchema), required=True)
    nextCursor = fields.String(required=True, allow_none=True, metadata={"description": "the next page's `cursor`"})
    hasMore = fields.Boolean(required=True)
    limit = fields.Integer(required=True)


class OnlineUserSchema(Schema):
    userId = _id(required=True)
    userInfo = fields.Dict(required=True, metadata={"description": "id, username, displayName, role, department"})
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    lastSeen = _time(required=True, allow_none=True)
    version = fields.Integer(required=True, metadata={"description": "grows with every change others see"})


class OnlineUsersSchema(OkSchema):
    users = fields.List(fields.Nested(OnlineUserSchema), required=True)
    count = fields.Integer(required=True)


# -- rooms and messages -----------------------------------------------------------------------


class RoomSummarySchema(Schema):
    id = _id(required=True)
    roomId = fields.String(required=True, metadata={"description": "the room's name"})
    name = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(("public", "private", "direct")))
    topic = fields.String(required=True, allow_none=True)
    ownerId = _nullable_id()
    lastSeq = fields.Integer(required=True)
    createdAt = _time(required=True, allow_none=True)


class ListedRoomSchema(RoomSummarySchema):
    member = fields.Boolean(required=True)
    unread = fields.Integer(required=True)
    liveMemberCount = fields.Integer(required=True)


class RoomListSchema(OkSchema):
    rooms = fields.List(fields.Nested(ListedRoomSchema), required=True)


class RoomCreatedSchema(OkSchema):
    room = fields.Nested(RoomSummarySchema, required=True)


class RoomMemberSchema(UserSchema):
    memberRole = fields.String(required=True, validate=validate.OneOf(("owner", "member")))
    inRoom = fields.Boolean(required=True, metadata={"description": "has a socket in the room now"})


class RoomInfoSchema(RoomSummarySchema):
    members = fields.List(fields.Nested(RoomMemberSchema), required=True)
    memberCount = fields.Integer(required=True)
    liveMemberCount = fields.Integer(required=True)


class RoomInfoResponseSchema(OkSchema):
    room = fields.Nested(RoomInfoSchema, required=True)


class MemberAddedSchema(OkSchema):
    userId = _id(required=True)
    role = fields.String(required=True, validate=validate.OneOf(("owner", "member")))


class MemberRemovedSchema(OkSchema):
    userId = _id(required=True)
    lastSeq = fields.Integer(
        required=True, metadata={"description": "nothing after this seq reaches the removed member"}
    )


class SenderViewSchema(Schema):
    id = _id(required=True)
    name = fields.String(required=True, allow_none=True)
    username = fields.String(required=True, allow_none=True)


class MessageSchema(Schema):
    """A message as clients receive it (`room_message`, `new_message`, history)."""

    id = _id(required=True)
    seq = fields.Integer(required=True)
    roomId = fields.String(required=True, allow_none=True, metadata={"description": "null in a direct conversation"})
    to = _nullable_id()
    # "from" is a Python keyword: the attribute takes another name, the wire name is data_key.
    from_ = _id(required=True, data_key="from")
    sender = fields.Nested(SenderViewSchema, required=True)
    type = fields.String(required=True)
    content = fields.String(required=True)
    attachment = fields.Dict(required=True, allow_none=True)
    clientMsgId = fields.String(required=True, allow_none=True)
    createdAt = _time(required=True, allow_none=True)
    timestamp = _time(required=True, allow_none=True)
    editedAt = _time(required=True, allow_none=True)
    deleted = fields.Boolean(required=True)


class MessagePageSchema(OkSchema):
    roomId = fields.String(required=True, allow_none=True)
    with_ = _id(required=True, allow_none=True, data_key="with")
    messages = fields.List(fields.Nested(MessageSchema), required=True)
    hasMore = fields.Boolean(required=True)
    lastSeq = fields.Integer(required=True)


class ConversationSchema(Schema):
    with_ = fields.Nested(UserSchema, required=True, allow_none=True, data_key="with")
    lastSeq = fields.Integer(required=True)
    lastReadSeq = fields.Integer(required=True)
    unread = fields.Integer(required=True)
    createdAt = _time(required=True, allow_none=True)


class ConversationListSchema(OkSchema):
    conversations = fields.List(fields.Nested(ConversationSchema), required=True)


# -- notifications and broadcasts --------------------------------------------------------------


class FromSchema(Schema):
    id = _nullable_id()
    name = fields.String(required=True, allow_none=True)


class NotificationSchema(Schema):
    id = _id(required=True)
    type = fields.String(required=True)
    title = fields.String(required=True)
    message = fields.String(required=True)
    data = fields.Dict(required=True)
    timestamp = _time(required=True, allow_none=True)
    createdAt = _time(required=True, allow_none=True)
    read = fields.Boolean(required=True)
    readAt = _time(required=True, allow_none=True)
    from_ = fields.Nested(FromSchema, required=True, data_key="from")


class NotificationResponseSchema(OkSchema):
    notification = fields.Nested(NotificationSchema, required=True)


class NotificationPageSchema(OkSchema):
    notifications = fields.List(fields.Nested(NotificationSchema), required=True)
    hasMore = fields.Boolean(required=True)
    unreadCount = fields.Integer(required=True)


class MarkedAllSchema(OkSchema):
    updated = fields.Integer(required=True, metadata={"description": "how many were unread"})


class BroadcastSentSchema(OkSchema):
    kind = fields.String(required=True, validate=validate.OneOf(BROADCAST_KINDS))
    broadcast = fields.Dict(
        required=True,
        metadata={"description": "the event's payload as it was sent, with `broadcastId` (and `notificationId` "
                  "for a user message)"},
    )


class BroadcastRecordSchema(Schema):
    id = _id(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(BROADCAST_KINDS))
    target = fields.String(required=True, allow_none=True)
    event = fields.String(required=True)
    sender = fields.Nested(FromSchema, required=True)
    payload = fields.Dict(required=True)
    notificationId = _nullable_id()
    instanceId = fields.String(required=True, allow_none=True)
    createdAt = _time(required=True, allow_none=True)


class BroadcastPageSchema(OkSchema):
    broadcasts = fields.List(fields.Nested(BroadcastRecordSchema), required=True)
    hasMore = fields.Boolean(required=True)


class ActionRecordSchema(Schema):
    id = _id(required=True)
    userId = _nullable_id()
    username = fields.String(required=True, allow_none=True)
    action = fields.String(required=True)
    data = fields.Raw(required=True, allow_none=True)
    instanceId = fields.String(required=True, allow_none=True)
    createdAt = _time(required=True, allow_none=True)


class ActionPageSchema(OkSchema):
    actions = fields.List(fields.Nested(ActionRecordSchema), required=True)
    hasMore = fields.Boolean(required=True)


# -- operations --------------------------------------------------------------------------------


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.Equal("ok"))
    instanceId = fields.String(required=True)
    timestamp = _time(required=True)


class CheckSchema(Schema):
    class Meta:
        # A dependency's check may add what it knows (the queue's backlog, its latency).
        unknown = INCLUDE

    status = fields.String(required=True, validate=validate.OneOf(("ok", "failing", "disabled")))
    latencyMs = fields.Float()
    error = fields.String(metadata={"description": "the kind of failure only; the detail is in the log"})


class ReadinessSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(("ready", "unavailable")))
    checks = fields.Dict(keys=fields.String(), values=fields.Nested(CheckSchema), required=True,
                         metadata={"description": "instance, database, messageQueue, sharedState"})
    failing = fields.List(fields.String(), metadata={"description": "the checks that failed (503 only)"})
    instanceId = fields.String(required=True)
    timestamp = _time(required=True)


class InstanceStatsSchema(Schema):
    class Meta:
        unknown = INCLUDE

    instanceId = fields.String(required=True)
    connections = fields.Integer(required=True)
    totalConnections = fields.Integer(required=True)
    byNamespace = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    byTransport = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    usersOnline = fields.Integer(required=True)
    rooms = fields.Integer(required=True)
    liveRooms = fields.Integer(required=True)
    messagesPerSecond = fields.Float(required=True)
    errorsPerSecond = fields.Float(required=True)
    messagesTotal = fields.Integer(required=True)
    uptime = fields.Float(required=True)
    memoryRss = fields.Integer(required=True)
    timestamp = _time(required=True)


class SocketStatusSchema(OkSchema, InstanceStatsSchema):
    class Meta:
        unknown = RAISE


class MemorySchema(Schema):
    rss = fields.Integer(required=True, metadata={"description": "bytes, summed over the instances"})


class MetricsSummarySchema(OkSchema):
    totalConnections = fields.Integer(required=True)
    activeConnections = fields.Integer(required=True)
    messagesPerSecond = fields.Float(required=True)
    errorsPerSecond = fields.Float(required=True)
    uptime = fields.Float(required=True)
    memory = fields.Nested(MemorySchema, required=True)
    usersOnline = fields.Integer(required=True)
    instances = fields.List(fields.Nested(InstanceStatsSchema), required=True)
    timestamp = _time(required=True)
