"""Wire event names (the contract with clients), listed once, and where each may be delivered."""
from __future__ import annotations

DEFAULT = "/"
CHAT = "/chat"
PRESENCE = "/presence"
ADMIN = "/admin"

# Server -> client.
CONNECTED = "connected"
ERROR = "error"
RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
PONG = "pong"
ROOM_JOINED = "room_joined"
ROOM_LEFT = "room_left"
ROOM_MESSAGE = "room_message"
NEW_MESSAGE = "new_message"
MESSAGE_UPDATED = "message_updated"
MESSAGE_DELETED = "message_deleted"
USER_TYPING = "user_typing"
USER_ONLINE = "user_online"
USER_OFFLINE = "user_offline"
ONLINE_USERS = "online_users"
USER_UPDATED = "user_updated"
USER_UPDATE = "user_update"
NOTIFICATION = "notification"
SYSTEM_MESSAGE = "system_message"
ADMIN_MESSAGE = "admin_message"
DEPARTMENT_MESSAGE = "department_message"
SESSION_REVOKED = "session_revoked"
STATS = "stats"
SERVER_SHUTDOWN = "server_shutdown"
# This socket was taken out of a room it may no longer read (removed, banned, role changed).
REMOVED_FROM_ROOM = "removed_from_room"
# Messages of a room this socket could not be sent in order (fetch them with get_history).
MESSAGES_MISSED = "messages_missed"

# Which namespaces serve each server event: a client of any of them that is in the
# target room receives it. The default namespace serves everything (clients that use no namespace).
NAMESPACES_BY_EVENT: dict[str, tuple[str, ...]] = {
    ROOM_JOINED: (DEFAULT, CHAT),
    ROOM_LEFT: (DEFAULT, CHAT),
    REMOVED_FROM_ROOM: (DEFAULT, CHAT),
    ROOM_MESSAGE: (DEFAULT, CHAT),
    NEW_MESSAGE: (DEFAULT, CHAT),
    MESSAGES_MISSED: (DEFAULT, CHAT),
    MESSAGE_UPDATED: (DEFAULT, CHAT),
    MESSAGE_DELETED: (DEFAULT, CHAT),
    USER_TYPING: (DEFAULT, CHAT),
    USER_ONLINE: (DEFAULT, PRESENCE),
    USER_OFFLINE: (DEFAULT, PRESENCE),
    USER_UPDATED: (DEFAULT, PRESENCE),
    USER_UPDATE: (DEFAULT, PRESENCE),
    NOTIFICATION: (DEFAULT, CHAT, PRESENCE, ADMIN),
    SYSTEM_MESSAGE: (DEFAULT, CHAT, PRESENCE, ADMIN),
    ADMIN_MESSAGE: (DEFAULT, ADMIN),
    DEPARTMENT_MESSAGE: (DEFAULT, CHAT),
    SESSION_REVOKED: (DEFAULT, CHAT, PRESENCE, ADMIN),
    STATS: (ADMIN,),
}


def namespaces_for(event: str) -> tuple[str, ...]:
    """The namespaces an event is delivered on (the default namespace for events not listed)."""
    return NAMESPACES_BY_EVENT.get(event, (DEFAULT,))


# Rooms the server manages; clients can never join these by name.
ALL_USERS_ROOM = "all_users"
ROLE_ROOMS = {"admin": "admins", "moderator": "moderators"}
RESERVED_ROOM_PREFIXES = ("user_", "department_", "sid_", "dm:")
RESERVED_ROOMS = frozenset({ALL_USERS_ROOM, *ROLE_ROOMS.values()})


def user_room(user_id: int | str) -> str:
    """The personal room every socket of a user is in."""
    return f"user_{user_id}"


def department_room(department: str) -> str:
    """The room of every socket whose user belongs to a department."""
    return f"department_{department}"


def is_reserved_room(name: str) -> bool:
    """True for server-managed rooms, which clients cannot join by name."""
    return name in RESERVED_ROOMS or name.startswith(RESERVED_ROOM_PREFIXES)
