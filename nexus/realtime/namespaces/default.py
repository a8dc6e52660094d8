"""The default namespace `/`: every event front ends use, for clients that connect without a namespace."""
from __future__ import annotations

import time
from typing import Any

from nexus.errors import NexusError
from nexus.models import iso_from_epoch_ms
from nexus.realtime import broadcast, events
from nexus.realtime.namespaces.base import NexusNamespace, rate_cost
from nexus.realtime.namespaces.chat import ChatEvents
from nexus.realtime.namespaces.presence import PresenceEvents
from nexus.realtime.sessions import SocketSession
from nexus.schemas import load, schema
from nexus.schemas.admin import NotificationRefSchema, UserActionSchema
from nexus.schemas.users import PingSchema
from nexus.services import audit, inbox, notifications


def server_time() -> dict[str, Any]:
    """The server's clock, as ISO text and as epoch milliseconds."""
    now_ms = int(time.time() * 1000)
    return {"serverTime": iso_from_epoch_ms(now_ms), "timestamp": now_ms}


class DefaultNamespace(ChatEvents, PresenceEvents, NexusNamespace):
    """Connection, chat, presence, ping, user_action, notification and authenticate events; admin ones: `/admin`."""

    def welcome(self, session: SocketSession) -> None:
        # Read once the socket is in its user room (greet), so what commits meanwhile is read or pushed;
        # together with the other sockets connecting at the same moment.
        waiting = inbox.Inbox() if session.user_id is None else inbox.reader().read(session.user_id)
        broadcast.reply(
            events.CONNECTED,
            {
                "socketId": session.sid,
                "user": session.identity(),
                "guest": session.is_guest,
                "unread": waiting.unread,
                "unreadDirect": waiting.unread_direct,
                "instanceId": self.config.instance_id,
                **server_time(),
            },
            sid=session.sid,
            namespace=self.namespace,
        )
        if session.user_id is not None:
            self.send_online_users(session)
            # Notifications sent while the user was away arrive now, oldest first, until read.
            for notification in waiting.notifications:
                broadcast.reply(events.NOTIFICATION, notification, sid=session.sid, namespace=self.namespace)

    def on_ping(self, session: SocketSession, payload: Any = None, *_: Any) -> dict[str, Any]:
        """Answered twice: by the ack, for ping(cb), and by a `pong` event, for clients that send ping({timestamp})."""
        data = load(schema(PingSchema), payload) if isinstance(payload, dict) else {}
        now = server_time()
        pong = {"timestamp": now["timestamp"], "serverTime": now["serverTime"]}
        if data.get("timestamp") is not None:
            pong["clientTimestamp"] = data["timestamp"]
        broadcast.reply(events.PONG, pong, sid=session.sid, namespace=self.namespace)
        return pong

    def on_user_action(self, session: SocketSession, payload: Any = None, *_: Any) -> dict[str, Any]:
        """user_action {action, data}: what a user did in the front end, recorded for audit and sent to no one."""
        data = load(schema(UserActionSchema), payload)
        return audit.record_action(session.actor(), data["action"], data["data"], instance_id=self.config.instance_id)

    def on_notification_read(self, session: SocketSession, payload: Any = None, *_: Any) -> dict[str, Any]:
        """Mark one of the user's notifications read."""
        if session.user_id is None:
            raise NexusError("FORBIDDEN", "Guests have no notifications.")
        notification_id = load(schema(NotificationRefSchema), payload)["id"]
        return {"notification": notifications.mark_read(session.user_id, notification_id)}

    @rate_cost(2)
    def on_authenticate(self, session: SocketSession, token: Any = None, *_: Any) -> dict[str, Any]:
        """authenticate(token, cb) upgrades a guest socket (or refreshes a user's token)."""
        if isinstance(token, dict):  # {token: "..."} is accepted too
            token = token.get("token")
        upgraded = self.authenticate(session.sid, token)
        return {"user": upgraded.identity(), "socketId": upgraded.sid}
