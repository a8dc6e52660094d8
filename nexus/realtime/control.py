"""Orders every instance carries out on its own sockets (disconnect a user's sockets), sent to the
other instances through the message queue next to the events."""
from __future__ import annotations

import json
import logging
from typing import Any

import socketio

from nexus.realtime import events
from nexus.realtime.sessions import SessionRegistry

log = logging.getLogger("nexus.control")

METHOD = "nexus_control"


class Control:
    """Carries out control orders here, and sends them to the other instances."""

    def __init__(self, server: Any, sessions: SessionRegistry, broadcaster: Any):
        self.server = server
        self.sessions = sessions
        self.broadcaster = broadcaster  # the app's facade; orders also arrive outside any app context

    def disconnect_user(self, user_id: int, reason: str) -> int:
        """Close every socket of a user, on every instance; returns how many were on this one."""
        self._publish({"action": "disconnect_user", "userId": user_id, "reason": reason})
        return self._disconnect_here(user_id, reason)

    def close_token_sockets(self, user_id: int, jti: str, reason: str) -> int:
        """Close the sockets that were opened with one token (logged out), on every instance."""
        self._publish({"action": "close_token", "userId": user_id, "jti": jti, "reason": reason})
        return self._disconnect_here(user_id, reason, jti=jti)

    def handle(self, raw: Any) -> None:
        """An order from another instance (called by the queue listener)."""
        try:
            order = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
        except ValueError:
            return
        if not isinstance(order, dict) or order.get("method") != METHOD:
            return
        if order.get("host_id") == getattr(self.server.manager, "host_id", None):
            return  # ours: already carried out here
        user_id, reason = order.get("userId"), str(order.get("reason", ""))[:200]
        if not isinstance(user_id, int):
            return
        if order.get("action") == "disconnect_user":
            self._disconnect_here(user_id, reason)
        elif order.get("action") == "close_token" and isinstance(order.get("jti"), str):
            self._disconnect_here(user_id, reason, jti=order["jti"])

    def _publish(self, order: dict[str, Any]) -> None:
        manager = self.server.manager
        if isinstance(manager, socketio.PubSubManager):  # else one process, no queue
            manager._publish({"method": METHOD, "host_id": manager.host_id, **order})

    def _disconnect_here(self, user_id: int, reason: str, *, jti: str | None = None) -> int:
        sids = [
            sid for sid in self.sessions.sids_of_user(user_id)
            if jti is None or getattr(self.sessions.get(sid), "token_jti", None) == jti
        ]
        for sid in sids:
            session = self.sessions.get(sid)
            if session is None:
                continue
            self.broadcaster.reply(events.SESSION_REVOKED, {"reason": reason}, sid=sid, namespace=session.namespace)
            self.server.disconnect(sid, namespace=session.namespace, ignore_queue=True)
        if sids:
            log.info("disconnected user=%s sockets=%d reason=%s", user_id, len(sids), reason)
        return len(sids)
