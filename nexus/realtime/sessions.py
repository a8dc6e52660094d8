"""Who each socket of this process is: a small in-process registry, cleaned on disconnect."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from threading import Lock
from typing import Any, Iterator

from nexus.models import isoformat, utcnow
from nexus.services.rooms import Actor


@dataclass
class SocketSession:
    """The identity and bookkeeping of one connected socket."""

    sid: str
    namespace: str
    user_id: int | None = None
    username: str | None = None
    display_name: str | None = None
    role: str = "guest"
    department: str | None = None
    token_jti: str | None = None
    token_expires_at: float | None = None
    remote_addr: str | None = None
    connected_at: datetime = field(default_factory=utcnow)

    @property
    def is_guest(self) -> bool:
        return self.user_id is None

    def identity(self) -> dict[str, Any] | None:
        """The user as the `connected` welcome and acks show it (None for a guest)."""
        if self.user_id is None:
            return None
        return {
            "id": str(self.user_id),
            "userId": str(self.user_id),
            "username": self.username,
            "displayName": self.display_name,
            "role": self.role,
            "department": self.department,
        }

    def actor(self) -> Actor:
        """The acting identity services take."""
        return Actor(
            user_id=self.user_id,
            role=self.role,
            username=self.username,
            display_name=self.display_name,
            guest_key=self.sid,
        )

    def describe(self) -> dict[str, Any]:
        """A summary for operators (no token material)."""
        return {
            "sid": self.sid,
            "namespace": self.namespace,
            "userId": None if self.user_id is None else str(self.user_id),
            "guest": self.is_guest,
            "connectedAt": isoformat(self.connected_at),
        }


class SessionRegistry:
    """Sockets of this process by sid and by user; thread- and greenlet-safe."""

    def __init__(self) -> None:
        self._lock = Lock()
        self._by_sid: dict[str, SocketSession] = {}
        self._by_user: dict[int, set[str]] = {}

    def add(self, session: SocketSession) -> None:
        with self._lock:
            self._by_sid[session.sid] = session
            if session.user_id is not None:
                self._by_user.setdefault(session.user_id, set()).add(session.sid)

    def get(self, sid: str) -> SocketSession | None:
        return self._by_sid.get(sid)

    def remove(self, sid: str) -> SocketSession | None:
        with self._lock:
            session = self._by_sid.pop(sid, None)
            if session is not None and session.user_id is not None:
                self._unlink_user(session.user_id, sid)
            return session

    def set_user(self, sid: str, **identity: Any) -> SocketSession:
        """Turn a socket (a guest, usually) into a user's socket."""
        with self._lock:
            session = self._by_sid[sid]
            if session.user_id is not None:
                self._unlink_user(session.user_id, sid)
            for name, value in identity.items():
                setattr(session, name, value)
            if session.user_id is not None:
                self._by_user.setdefault(session.user_id, set()).add(sid)
            return session

    def sids_of_user(self, user_id: int) -> set[str]:
        return set(self._by_user.get(user_id, ()))

    def __iter__(self) -> Iterator[SocketSession]:
        return iter(list(self._by_sid.values()))

    def __len__(self) -> int:
        return len(self._by_sid)

    def _unlink_user(self, user_id: int, sid: str) -> None:
        sids = self._by_user.get(user_id)
        if sids is not None:
            sids.discard(sid)
            if not sids:
                del self._by_user[user_id]
