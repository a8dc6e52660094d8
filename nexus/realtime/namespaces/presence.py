"""Presence events (status, online list), on `/` and on the class-based `/presence`."""
from __future__ import annotations

from typing import Any

from nexus.realtime import broadcast, events
from nexus.realtime.namespaces.base import NexusNamespace
from nexus.realtime.sessions import SocketSession
from nexus.schemas import load, schema
from nexus.schemas.users import StatusSchema


class PresenceEvents:
    """Presence handlers; mixed in ahead of NexusNamespace."""

    presence: Any
    namespace: str

    def send_online_users(self, session: SocketSession) -> None:
        """A new connection learns who is online (seed B's `online_users`)."""
        broadcast.reply(events.ONLINE_USERS, self.presence.online_users(), sid=session.sid, namespace=self.namespace)

    def on_update_status(self, session: SocketSession, payload: Any = None, *_: Any) -> dict[str, Any]:
        """Seed A: update_status("online" | "away" | "busy" | "offline"); {status} is accepted too."""
        status = load(schema(StatusSchema), payload)["status"]
        return self.presence.update_status(session.actor(), status)

    def on_get_online_users(self, session: SocketSession, *_: Any) -> dict[str, Any]:
        """The current online list, as an ack."""
        return {"users": self.presence.online_users()}


class PresenceNamespace(PresenceEvents, NexusNamespace):
    """`/presence`: status and online list alone, for clients that want one area per connection."""

    def welcome(self, session: SocketSession) -> None:
        self.send_online_users(session)
