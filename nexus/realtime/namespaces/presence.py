"""Presence events (status, online list), on `/` and on the class-based `/presence`."""
from __future__ import annotations

from typing import Any

from nexus.realtime import broadcast, events
from nexus.realtime.namespaces.base import NexusNamespace
from nexus.realtime.sessions import SocketSession
from nexus.schemas import load, schema
from nexus.schemas.users import StatusSchema
from nexus.services.presence import with_events

#: Times the online list is read at most for a new socket while events it cannot apply go out.
SNAPSHOT_ROUNDS = 3


class PresenceEvents:
    """Presence handlers; mixed in ahead of NexusNamespace."""

    presence: Any
    namespace: str

    def send_online_users(self, session: SocketSession) -> None:
        """A new connection learns who is online (`online_users`). The socket is in `all_users`
        already, so presence events can reach it while the list is being read, ahead of the list
        and newer than what was read: those are applied to the list before it is sent (read again
        if one cannot be), so the list is never older than an event the client got before it."""
        recording = getattr(self.socketio.server.manager, "recording", None)
        listed: list[dict[str, Any]] = []
        for _ in range(SNAPSHOT_ROUNDS):
            if recording is None:
                listed = self.presence.online_users()
                break
            with recording(events.ALL_USERS_ROOM) as seen:
                listed = self.presence.online_users()
            listed, complete = with_events(listed, [(event, data) for namespace, event, data in seen
                                                    if namespace == self.namespace])
            if complete:
                break
        broadcast.reply(events.ONLINE_USERS, listed, sid=session.sid, namespace=self.namespace)

    def on_update_status(self, session: SocketSession, payload: Any = None, *_: Any) -> dict[str, Any]:
        """Set the user's status: update_status("online" | "away" | "busy" | "offline"); {status} is accepted too."""
        status = load(schema(StatusSchema), payload)["status"]
        return self.presence.update_status(session.actor(), status)

    def on_get_online_users(self, session: SocketSession, *_: Any) -> dict[str, Any]:
        """The current online list, as an ack."""
        return {"users": self.presence.online_users()}


class PresenceNamespace(PresenceEvents, NexusNamespace):
    """`/presence`: status and online list alone, for clients that want one area per connection."""

    def welcome(self, session: SocketSession) -> None:
        self.send_online_users(session)
