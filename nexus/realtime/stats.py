"""What an operator and the admin dashboard see of the instances: connections by namespace and
transport, users online, rooms, rates, memory. Each instance posts its own figures to the stats
board every few seconds; anyone reads them all."""
from __future__ import annotations

import time
from typing import Any

from nexus.models import isoformat, utcnow
from nexus.realtime.sessions import SessionRegistry
from nexus.services import rooms
from nexus.services.metrics import Metrics, aggregate, memory_rss_bytes
from nexus.stores.base import StatsBoard


class StatsReporter:
    """Figures of this instance, and of every live instance through the board."""

    def __init__(
        self, *, instance_id: str, server: Any, sessions: SessionRegistry, presence: Any, live_rooms: Any,
        metrics: Metrics, board: StatsBoard,
    ):
        self.instance_id = instance_id
        self.server = server
        self.sessions = sessions
        self.presence = presence
        self.live_rooms = live_rooms
        self.metrics = metrics
        self.board = board

    def local(self) -> dict[str, Any]:
        """This instance (needs an app context: the room count comes from the database)."""
        by_namespace: dict[str, int] = {}
        by_transport: dict[str, int] = {}
        for session in self.sessions:
            by_namespace[session.namespace] = by_namespace.get(session.namespace, 0) + 1
            try:
                transport = self.server.transport(session.sid, session.namespace)
            except Exception:  # gone meanwhile
                continue
            by_transport[transport] = by_transport.get(transport, 0) + 1
        return {
            "instanceId": self.instance_id,
            "connections": len(self.sessions),
            "totalConnections": self.metrics.connections_total,
            "byNamespace": by_namespace,
            "byTransport": by_transport,
            "usersOnline": len(self.presence.tally.members("presence")),
            "rooms": rooms.count_rooms(),
            "liveRooms": self.live_rooms.local_room_count(),
            "messagesPerSecond": self.metrics.messages.per_second(),
            "errorsPerSecond": self.metrics.errors.per_second(),
            "messagesTotal": self.metrics.messages.total,
            "uptime": self.metrics.uptime_s(),
            "memoryRss": memory_rss_bytes(),
            "timestamp": isoformat(utcnow()),
        }

    def cluster(self) -> dict[str, Any]:
        """Every live instance's figures (this one's fresh) and their totals."""
        mine = self.local()
        others = [stats for stats in self.board.all() if stats.get("instanceId") != self.instance_id]
        instances = sorted([mine, *others], key=lambda stats: stats.get("instanceId", ""))
        return {"totals": aggregate(instances), "instances": instances, "at": int(time.time() * 1000)}

    def publish(self) -> dict[str, Any]:
        """Post this instance's figures for the others; returns them."""
        mine = self.local()
        self.board.publish(self.instance_id, mine)
        return mine
