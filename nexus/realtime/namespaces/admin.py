"""`/admin`: broadcasts, notifications, live stats, and moderation, for administrators only."""
from __future__ import annotations

from typing import Any

from nexus.errors import NexusError
from nexus.realtime import broadcast, events
from nexus.realtime.control import Control
from nexus.realtime.namespaces.base import NexusNamespace
from nexus.realtime.sessions import SocketSession
from nexus.realtime.stats import StatsReporter
from nexus.schemas import load, schema
from nexus.schemas.admin import RoleSchema, UserRefSchema
from nexus.schemas.broadcasts import BroadcastSchema
from nexus.services import broadcasts, users
from nexus.services.broadcasts import Sender

STATS_ROOM = "admin_stats"


class AdminNamespace(NexusNamespace):
    """Refuses every connection that is not an administrator's (FORBIDDEN)."""

    guests_allowed = False

    def __init__(self, namespace: str, *, control: Control, stats: StatsReporter, **kwargs: Any):
        super().__init__(namespace, **kwargs)
        self.control = control
        self.stats = stats

    def check_access(self, session: SocketSession) -> None:
        if session.role != "admin":
            raise NexusError("FORBIDDEN", "Administrators only.")

    def join_managed_rooms(self, session: SocketSession) -> None:
        super().join_managed_rooms(session)
        self.enter_room(session.sid, STATS_ROOM)

    def welcome(self, session: SocketSession) -> None:
        broadcast.reply(events.STATS, self.cluster_stats(), sid=session.sid, namespace=self.namespace)

    # -- events ---------------------------------------------------------------------

    def on_broadcast(self, session: SocketSession, payload: Any = None, *_: Any) -> dict[str, Any]:
        """{kind: system|admin|department|room|user, message, department?, room?, userId?, title?, type?}."""
        data = load(schema(BroadcastSchema), payload)
        return {"kind": data["kind"], "broadcast": broadcasts.send(self._sender(session), data)}

    def on_get_stats(self, session: SocketSession, *_: Any) -> dict[str, Any]:
        return {"stats": self.cluster_stats()}

    def on_disconnect_user(self, session: SocketSession, payload: Any = None, *_: Any) -> dict[str, Any]:
        user_id = load(schema(UserRefSchema), payload)["user_id"]
        users.get_user(user_id)
        here = self.control.disconnect_user(user_id, "disconnected by an administrator")
        return {"userId": str(user_id), "disconnectedHere": here}

    def on_set_role(self, session: SocketSession, payload: Any = None, *_: Any) -> dict[str, Any]:
        data = load(schema(RoleSchema), payload)
        return self._set_role(session, data["user_id"], data["role"])

    def on_ban_user(self, session: SocketSession, payload: Any = None, *_: Any) -> dict[str, Any]:
        return self._set_role(session, load(schema(UserRefSchema), payload)["user_id"], "banned")

    # -- stats ----------------------------------------------------------------------

    def cluster_stats(self) -> dict[str, Any]:
        return self.stats.cluster()

    def publish_stats(self) -> None:
        """Post this instance's stats for the others, and push the cluster's to the admins here."""
        self.stats.publish()
        if any(session.namespace == self.namespace for session in self.sessions):
            broadcast.broadcaster().emit_here(events.STATS, self.stats.cluster(), room=STATS_ROOM,
                                              namespace=self.namespace)

    # -- helpers --------------------------------------------------------------------

    def _set_role(self, session: SocketSession, user_id: int, role: str) -> dict[str, Any]:
        user = users.change_role(session.actor(), user_id, role, disconnect=self.control.disconnect_user)
        return {"user": user.public_dict()}

    @staticmethod
    def _sender(session: SocketSession) -> Sender:
        return Sender(user_id=session.user_id, label=session.username or "admin")
