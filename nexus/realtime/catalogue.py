"""The Socket.IO event catalogue: per namespace, what clients send (payload, ack, refusal codes) and what
the server sends (payload, receiving rooms).

The payload schemas are the marshmallow schemas the handlers load (nexus.schemas); what the server sends
is described in nexus.schemas.replies. The AsyncAPI document (`GET /api/asyncapi.json`) and the
TypeScript types (`python -m nexus.typescript`) are made from this catalogue, and tests hold the
namespaces' handlers to it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields

from nexus.config import Config
from nexus.realtime import events
from nexus.realtime.events import ADMIN, CHAT, DEFAULT, PRESENCE
from nexus.schemas import chat, replies, schema
from nexus.schemas.admin import NotificationRefSchema, RoleSchema, UserActionSchema, UserRefSchema
from nexus.schemas.broadcasts import BroadcastSchema
from nexus.schemas.chat import ROOM_NAME, RoomName
from nexus.schemas.users import PingSchema, StatusSchema

#: Refusals any event may get: the connection is closing, the token expired, too many events,
#: binary content, a database or Redis outage, an internal error (with a reference id).
COMMON_ERRORS = ("UNAUTHORIZED", "TOKEN_EXPIRED", "VALIDATION_ERROR", "RATE_LIMITED", "UNAVAILABLE", "INTERNAL_ERROR")
#: Events a socket may still send once its token has expired (NexusNamespace.allowed_after_expiry).
ALLOWED_AFTER_EXPIRY = frozenset({"ping", "authenticate"})


class AuthenticateSchema(Schema):
    """`authenticate`: an access token, bare or as {token} (checked by the token service, not here)."""

    token = fields.String(required=True)


@dataclass(frozen=True)
class Payload:
    """What a client event carries: the schema its handler loads, and the other shapes it accepts."""

    schema: type[Schema]
    #: The schema's keyword arguments, each taken from a setting: {"max_length": "max_message_length"}.
    settings: Mapping[str, str] = field(default_factory=dict)
    #: The field a bare value stands for: join_room("general") is join_room({room: "general"}).
    bare: str | None = None
    #: Other keys accepted for a field: {"room": "roomId"} accepts {roomId} for {room}.
    aliases: Mapping[str, str] = field(default_factory=dict)
    #: The event may be sent with the ack callback alone (ping(cb)).
    optional: bool = False
    #: False where the handler checks the value itself rather than loading the schema (authenticate's token).
    loaded: bool = True

    def options(self, config: Config | None = None) -> dict[str, Any]:
        """The schema's keyword arguments under a configuration (the defaults without one)."""
        return {option: getattr(config or Config, setting) for option, setting in self.settings.items()}

    def load_schema(self, config: Config | None = None) -> Schema:
        """The schema instance, shared with the handlers (nexus.schemas.schema caches by class and options)."""
        return schema(self.schema, **self.options(config))


@dataclass(frozen=True)
class ClientEvent:
    """An event a client sends; every one is answered `{success: true, ...reply}` or a refusal."""

    name: str
    summary: str
    payload: Payload | None
    reply: type[Schema]
    #: Refusal codes of this event besides COMMON_ERRORS.
    errors: tuple[str, ...] = ()
    #: Cost against the sender's rate limit (nexus.realtime.namespaces.base.rate_cost).
    cost: int = 1
    #: A valid payload, shown in the AsyncAPI document (and checked against the schema by the tests).
    example: Any = None
    #: Commonly sent without an ack (`update_status('online')`, typing): its refusals then come as an
    #: `error` event, and the TypeScript types accept it with or without the callback.
    ack_optional: bool = False

    @property
    def error_codes(self) -> tuple[str, ...]:
        """Every code its refusals may carry: its own, then the common ones."""
        codes = dict.fromkeys([*self.errors, *COMMON_ERRORS])
        if self.name in ALLOWED_AFTER_EXPIRY and "TOKEN_EXPIRED" not in self.errors:
            del codes["TOKEN_EXPIRED"]
        return tuple(codes)


@dataclass(frozen=True)
class ServerEvent:
    """An event the server sends."""

    name: str
    summary: str
    payload: type[Schema]
    #: Who receives it: managed rooms (user_<id>, all_users, ...), a chat room, or one socket.
    rooms: tuple[str, ...]
    #: The namespaces it is sent on.
    namespaces: tuple[str, ...]
    #: The payload is a list of `payload` items.
    many: bool = False


@dataclass(frozen=True)
class NamespaceEvents:
    """One namespace: its name, what it is for, and what its clients send."""

    name: str
    summary: str
    receives: tuple[ClientEvent, ...]

    @property
    def sends(self) -> tuple[ServerEvent, ...]:
        return tuple(event for event in SERVER_EVENTS if self.name in event.namespaces)


SOCKET = "the socket concerned"
ROOM = "the chat room (its members' sockets that joined it)"

# -- client -> server ---------------------------------------------------------------------------

ROOM_REF = Payload(chat.RoomRefSchema, bare="room", aliases={"room": "roomId"})

CHAT_EVENTS = (
    ClientEvent(
        "join_room", "Join a chat room (made on first join: public, or the `kind` asked; an existing room of "
        "another kind is CONFLICT); with `since`, the messages after that seq come first as `room_message`; "
        "the others get `room_joined`.",
        Payload(chat.JoinRoomSchema, bare="room", aliases={"room": "roomId"}), replies.RoomJoinedAckSchema,
        ("FORBIDDEN", "ROOM_NOT_FOUND", "LIMIT_REACHED", "CONFLICT"), cost=2,
        example={"room": "general", "since": 41},
    ),
    ClientEvent(
        "leave_room", "Leave a chat room; the others get `room_left` when the user's last socket leaves.",
        ROOM_REF, replies.RoomLeftAckSchema, ("NOT_FOUND",), example="general",
    ),
    ClientEvent(
        "room_info", "A room's members with their status, and its counts.",
        ROOM_REF, replies.RoomInfoAckSchema, ("ROOM_NOT_FOUND", "FORBIDDEN"), example={"roomId": "general"},
    ),
    ClientEvent(
        "send_message", "Store a message, then `room_message` to the room (the sending socket must have joined "
        "it: NOT_IN_ROOM otherwise), or `new_message` to the recipient (and the sender's other sockets); the "
        "same clientMsgId twice stores one message.",
        Payload(chat.MessageCreateSchema, settings={"max_length": "max_message_length"},
                aliases={"roomId": "room"}),
        replies.MessageSentSchema, ("FORBIDDEN", "ROOM_NOT_FOUND", "USER_NOT_FOUND", "NOT_IN_ROOM", "CONFLICT"),
        cost=3,
        example={"roomId": "general", "content": "Hello", "type": "text", "clientMsgId": "c-1"},
    ),
    ClientEvent(
        "edit_message", "Change a message's text (its sender or an admin); `message_updated` where it went.",
        Payload(chat.MessageEditSchema, settings={"max_length": "max_message_length"}),
        replies.MessageChangedSchema, ("NOT_FOUND", "FORBIDDEN", "CONFLICT"), cost=2,
        example={"messageId": 7, "content": "Hello again"},
    ),
    ClientEvent(
        "delete_message", "Delete a message (its sender or an admin; a tombstone stays); `message_deleted`.",
        Payload(chat.MessageRefSchema, bare="message_id"),
        replies.MessageChangedSchema, ("NOT_FOUND", "FORBIDDEN"), cost=2, example={"messageId": 7},
    ),
    ClientEvent(
        "get_history", "A page of a room's or a direct conversation's messages by seq.",
        Payload(chat.HistorySchema, aliases={"roomId": "room"}),
        replies.HistoryPageSchema, ("ROOM_NOT_FOUND", "FORBIDDEN", "NOT_FOUND", "USER_NOT_FOUND"), cost=2,
        example={"roomId": "general", "before": 120, "limit": 50},
    ),
    ClientEvent(
        "mark_read", "Move the read marker of a room ({roomId, seq}) or a direct conversation ({with, seq}).",
        Payload(chat.MarkReadSchema, aliases={"roomId": "room"}),
        replies.MarkedReadSchema, ("ROOM_NOT_FOUND", "FORBIDDEN", "NOT_FOUND", "USER_NOT_FOUND"),
        example={"roomId": "general", "seq": 42},
ack_optional=True,
    ),
    ClientEvent(
        "typing_start", "`user_typing` (isTyping true) to the room's others; ends by itself after a while.",
        Payload(chat.TypingSchema, bare="room", aliases={"roomId": "room"}),
        replies.TypingAckSchema, ("NOT_IN_ROOM",), example="general",
ack_optional=True,
    ),
    ClientEvent(
        "typing_stop", "`user_typing` (isTyping false) to the room's others.",
        Payload(chat.TypingSchema, bare="room", aliases={"roomId": "room"}),
        replies.TypingAckSchema, ("NOT_IN_ROOM",), example={"roomId": "general"},
ack_optional=True,
    ),
)

PRESENCE_EVENTS = (
    ClientEvent(
        "update_status", "Choose a status; `user_updated` to everyone (`offline` is invisible: others get "
        "`user_offline`).",
        Payload(StatusSchema, bare="status"), replies.StatusChangedSchema, ("FORBIDDEN", "USER_NOT_FOUND"),
        example="busy",
        ack_optional=True,
    ),
    ClientEvent(
        "get_online_users", "The online list, as the ack.", None, replies.OnlineUsersAckSchema,
    ),
)

DEFAULT_EVENTS = (
    ClientEvent(
        "ping", "Answered by the ack and by a `pong` event (with `clientTimestamp` when a timestamp was sent).",
        Payload(PingSchema, optional=True), replies.PongSchema, example={"timestamp": 1700000000000},
ack_optional=True,
    ),
    ClientEvent(
        "authenticate", "Turn a guest socket into the token's user (or renew an expiring token).",
        Payload(AuthenticateSchema, bare="token", loaded=False), replies.AuthenticatedSchema,
        ("INVALID_TOKEN", "TOKEN_EXPIRED", "TOKEN_REVOKED", "USER_BANNED", "FORBIDDEN", "LIMIT_REACHED"), cost=2,
        example="<access token>",
    ),
    ClientEvent(
        "user_action", "Record what the user did in the front end, for audit; sent to no one.",
        Payload(UserActionSchema), replies.ActionRecordedSchema, ("FORBIDDEN",),
        example={"action": "opened_settings", "data": {"tab": "profile"}},
ack_optional=True,
    ),
    ClientEvent(
        "notification_read", "Mark one of the user's notifications read.",
        Payload(NotificationRefSchema, bare="id", aliases={"id": "notificationId"}),
        replies.NotificationReadSchema, ("FORBIDDEN", "NOT_FOUND"), example={"id": 12},
    ),
)

ADMIN_EVENTS = (
    ClientEvent(
        "broadcast", "A recorded broadcast: `system_message` to everyone, `admin_message` to the admins, "
        "`department_message` to a department, `system_message` (type room) to a chat room, or a "
        "`notification` to one user.",
        Payload(BroadcastSchema), replies.BroadcastSentSchema, ("ROOM_NOT_FOUND", "USER_NOT_FOUND"),
        example={"kind": "department", "department": "sales", "message": "Targets updated"},
    ),
    ClientEvent("get_stats", "Every live instance's figures and their totals.", None, replies.StatsAckSchema),
    ClientEvent(
        "disconnect_user", "Close every socket of a user, on every instance (`session_revoked` first).",
        Payload(UserRefSchema, bare="user_id"), replies.UserDisconnectedSchema, ("USER_NOT_FOUND",),
        example={"userId": 3},
    ),
    ClientEvent(
        "set_role", "Change a user's role (a demotion takes them out of the private rooms they are not a "
        "member of, on every instance, before it commits).",
        Payload(RoleSchema), replies.UserChangedSchema, ("USER_NOT_FOUND", "FORBIDDEN", "CONFLICT"),
        example={"userId": 3, "role": "moderator"},
    ),
    ClientEvent(
        "ban_user", "Ban a user: their tokens stop working and every socket of theirs is closed.",
        Payload(UserRefSchema, bare="user_id"), replies.UserChangedSchema, ("USER_NOT_FOUND", "FORBIDDEN", "CONFLICT"),
        example=3,
    ),
)

# -- server -> client ---------------------------------------------------------------------------

_EVERY_NAMESPACE = (DEFAULT, CHAT, PRESENCE, ADMIN)


def _broadcast(name: str, summary: str, payload: type[Schema], rooms: tuple[str, ...], **kwargs: Any) -> ServerEvent:
    """An event the broadcast facade sends to rooms, on the namespaces nexus.realtime.events assigns it."""
    return ServerEvent(name, summary, payload, rooms, events.namespaces_for(name), **kwargs)


SERVER_EVENTS = (
    ServerEvent(events.CONNECTED, "The welcome, right after the CONNECT packet.", replies.ConnectedSchema,
                (SOCKET,), (DEFAULT,)),
    ServerEvent(events.ERROR, "An event sent without an ack was refused (or the welcome failed: event "
                "`connect`).", replies.EventRefusedSchema, (SOCKET,), _EVERY_NAMESPACE),
    ServerEvent(events.RATE_LIMIT_EXCEEDED, "Over the rate limit: events are refused until the window "
                "passes (once per window).", replies.RateLimitSchema, (SOCKET,), _EVERY_NAMESPACE),
    ServerEvent(events.PONG, "The answer to `ping`.", replies.PongSchema, (SOCKET,), (DEFAULT,)),
    ServerEvent(events.SERVER_SHUTDOWN, "This instance is stopping; the connection drops and the client "
                "reconnects.", replies.ServerShutdownSchema, ("every socket of the instance",), _EVERY_NAMESPACE),
    ServerEvent(events.ONLINE_USERS, "Who is online, on connecting.", replies.OnlineUserSchema, (SOCKET,),
                (DEFAULT, PRESENCE), many=True),
    _broadcast(events.ROOM_JOINED, "A user's first socket joined a room you are in.", replies.MembershipSchema,
               (ROOM,)),
    _broadcast(events.ROOM_LEFT, "A user's last socket left a room you are in.", replies.MembershipSchema, (ROOM,)),
    _broadcast(events.REMOVED_FROM_ROOM, "This socket was taken out of a room it may no longer read.",
               replies.RemovedFromRoomSchema, (SOCKET,)),
    _broadcast(events.ROOM_MESSAGE, "A new message in a room you are in (and catch-up replays), in seq order.",
               replies.MessageSchema, (ROOM,)),
    _broadcast(events.NEW_MESSAGE, "A direct message, to the recipient and the sender's other sockets.",
               replies.MessageSchema, ("user_<id>",)),
    _broadcast(events.MESSAGES_MISSED, "Messages that could not be sent in order; fetch them with get_history.",
               replies.MessagesMissedSchema, (SOCKET,)),
    _broadcast(events.MESSAGE_UPDATED, "A message was edited.", replies.MessageSchema, (ROOM, "user_<id>")),
    _broadcast(events.MESSAGE_DELETED, "A message was deleted (its tombstone).", replies.MessageSchema,
               (ROOM, "user_<id>")),
    _broadcast(events.USER_TYPING, "Someone started or stopped typing in a room you are in.",
               replies.TypingEventSchema, (ROOM,)),
    _broadcast(events.USER_ONLINE, "A user's first socket connected (or they became visible).",
               replies.UserOnlineSchema, (events.ALL_USERS_ROOM,)),
    _broadcast(events.USER_OFFLINE, "A user's last socket disconnected (or they became invisible).",
               replies.UserOfflineSchema, (events.ALL_USERS_ROOM,)),
    _broadcast(events.USER_UPDATED, "A user's status changed.", replies.StatusChangedSchema,
               (events.ALL_USERS_ROOM,)),
    _broadcast(events.USER_UPDATE, "A user changed their profile.", replies.ProfileUpdatedSchema,
               (events.ALL_USERS_ROOM,)),
    _broadcast(events.NOTIFICATION, "A notification to you (stored; unread ones again after `connected`).",
               replies.NotificationSchema, ("user_<id>",)),
    _broadcast(events.SYSTEM_MESSAGE, "A broadcast to everyone (or, type room, to a chat room's members).",
               replies.SystemMessageSchema, (events.ALL_USERS_ROOM, ROOM)),
    _broadcast(events.ADMIN_MESSAGE, "A broadcast to the administrators.", replies.AdminMessageSchema,
               (events.ROLE_ROOMS["admin"],)),
    _broadcast(events.DEPARTMENT_MESSAGE, "A broadcast to a department.", replies.DepartmentMessageSchema,
               ("department_<name>",)),
    _broadcast(events.SESSION_REVOKED, "This socket is being closed (logout, ban, an administrator).",
               replies.SessionRevokedSchema, (SOCKET,)),
    _broadcast(events.STATS, "The cluster's figures, on connecting and every 3 s.", replies.StatsSchema,
               ("admin_stats (every admin socket)",)),
)

NAMESPACES: dict[str, NamespaceEvents] = {
    DEFAULT: NamespaceEvents(
        DEFAULT, "Everything front ends use: chat, presence, notifications, ping, authenticate.",
        DEFAULT_EVENTS + CHAT_EVENTS + PRESENCE_EVENTS,
    ),
    CHAT: NamespaceEvents(CHAT, "The chat events alone.", CHAT_EVENTS),
    PRESENCE: NamespaceEvents(PRESENCE, "Status and the online list alone.", PRESENCE_EVENTS),
    ADMIN: NamespaceEvents(ADMIN, "Administrators only: broadcasts, live stats, moderation.", ADMIN_EVENTS),
}


def short_name(namespace: str) -> str:
    """`/` is `default`, `/chat` is `chat` (channel keys, TypeScript names)."""
    return namespace.strip("/") or "default"


def client_events() -> Iterator[ClientEvent]:
    """Every client event once (an event served on several namespaces is one definition)."""
    seen: set[str] = set()
    for namespace in NAMESPACES.values():
        for event in namespace.receives:
            if event.name not in seen:
                seen.add(event.name)
                yield event


# -- JSON Schema ------------------------------------------------------------------------------


def component_name(schema: type[Schema] | Schema) -> str:
    """The name a schema is described under: its class name without `Schema`."""
    cls = schema if isinstance(schema, type) else type(schema)
    return cls.__name__.removesuffix("Schema")


def ecma_pattern(pattern: str) -> str:
    """A Python regular expression as JSON Schema (ECMA-262) reads it: `\\Z` is `$` there."""
    return pattern.replace(r"\Z", "$")


def _room_name_pattern(self: Any, field: fields.Field, **_: Any) -> dict[str, Any]:
    if isinstance(field, RoomName):
        return {"pattern": ecma_pattern(ROOM_NAME.pattern), "minLength": 1, "maxLength": 64}
    return {}


def _fix_patterns(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: ecma_pattern(value) if key == "pattern" and isinstance(value, str) else _fix_patterns(value)
                for key, value in node.items()}
    if isinstance(node, list):
        return [_fix_patterns(item) for item in node]
    return node


@dataclass(frozen=True)
class Described:
    """The catalogue in JSON Schema: named component schemas, and the schema of each payload and ack."""

    components: dict[str, dict[str, Any]]
    payloads: dict[str, dict[str, Any] | None]
    #: The fields of each event's success ack (a reference to a component)...
    replies: dict[str, dict[str, Any]]
    #: ...and the whole success ack: those fields and `success: true`.
    acks: dict[str, dict[str, Any]]
    server_payloads: dict[str, dict[str, Any]]


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


@functools.lru_cache(maxsize=1)
def described() -> Described:
    """Convert the catalogue's schemas (apispec's marshmallow converter) and the payloads' other shapes."""
    plugin = MarshmallowPlugin()
    spec = APISpec("nexus", "1", "3.1.0", plugins=[plugin])
    plugin.converter.add_attribute_function(_room_name_pattern)

    def register(schema: type[Schema] | Schema) -> str:
        name = component_name(schema)
        if name not in spec.components.schemas:
            spec.components.schema(name, schema=schema)
        return name

    payloads: dict[str, dict[str, Any] | None] = {}
    reply_schemas: dict[str, dict[str, Any]] = {}
    for event in client_events():
        reply_schemas[event.name] = ref(register(event.reply))
        if event.payload is None:
            payloads[event.name] = None
            continue
        payload = event.payload
        name = register(payload.load_schema())
        object_schema = _fix_patterns(plugin.converter.schema2jsonschema(payload.load_schema()))
        shapes: list[dict[str, Any]] = [ref(name)]
        if payload.bare is not None:
            wire = payload.load_schema().fields[payload.bare].data_key or payload.bare
            shapes.insert(0, object_schema["properties"][wire])
        for key, alias in payload.aliases.items():
            shapes.append(_renamed(object_schema, key, alias))
        payloads[event.name] = shapes[0] if len(shapes) == 1 else {"anyOf": shapes}
    server_payloads = {}
    for server_event in SERVER_EVENTS:
        item = ref(register(server_event.payload))
        server_payloads[server_event.name] = {"type": "array", "items": item} if server_event.many else item
    components = _fix_patterns(spec.to_dict()["components"]["schemas"])
    acks = {name: _with_success(components[reply["$ref"].rsplit("/", 1)[-1]]) for name, reply in reply_schemas.items()}
    return Described(components, payloads, reply_schemas, acks, server_payloads)


def _with_success(reply: dict[str, Any]) -> dict[str, Any]:
    """A success ack: the reply's fields and `success: true` (one object: the reply allows no others)."""
    return {
        **reply,
        "properties": {"success": {"const": True}, **reply.get("properties", {})},
        "required": ["success", *reply.get("required", ())],
    }


def _renamed(object_schema: dict[str, Any], key: str, alias: str) -> dict[str, Any]:
    """The object shape with `alias` in place of `key`."""
    properties = {alias if name == key else name: value for name, value in object_schema["properties"].items()}
    variant = {**object_schema, "properties": properties}
    if key in object_schema.get("required", ()):
        variant["required"] = [alias if name == key else name for name in object_schema["required"]]
    return variant
