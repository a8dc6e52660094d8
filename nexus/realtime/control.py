"""Orders every instance carries out on its own sockets (disconnect a user's sockets, close the
sockets of a token, take a user's sockets out of rooms they may no longer read) or on what it keeps
(forget the socket tokens it verified, `forget_identities`), sent to the other instances through the
message queue next to the events.

Revoking access to a room (a member removed, a user banned, an administrator demoted) must hold
for every message committed after the revoking change, on every instance and on every path a
message takes to a socket: the sending instance's own fan-out, the message queue, the outbox
relay, gap filling, a catch-up replay. So `revoke` carries the revocation out everywhere *before*
the change commits:

1. The caller's transaction is open (a member's removal also holds the room's row lock, which
   every message of the room takes for its seq: the last seq before the removal is exact, and no
   message of the room commits until the removal has).
2. The order is published on the queue and carried out here; every other live instance (the
   instance registry of the shared store: a heartbeat within the last few seconds) carries it out
   when it arrives and acknowledges it through the queue. Carrying it out is done in memory,
   without yielding to another greenlet: the user's sockets leave the room (python-socketio's
   room, which every fan-out reads when it sends), their catch-up hold is forgotten, they are told
   `removed_from_room`, and a revocation mark in the RoomGate keeps them from entering the room
   again (join_room, catch-up on connect) and stops a replay that is under way.
3. Only when every live instance has acknowledged does the caller commit. If one does not answer
   within REVOKE_WAIT_S (dead but not yet expired, cut off from the queue), the change is rolled
   back and answered UNAVAILABLE with a retry hint: access is never left half revoked.

A message committed after the revoking commit is fanned out, by whichever instance and path,
after every instance has taken the user's sockets out of the room, so they are not among the
room's participants; a catch-up replay reads the database after that commit too, and checks the
mark before each message it sends. After the commit the database refuses the user (join_room,
get_history, catch-up) as it refuses any non-member; the marks expire by themselves.

Not covered: an instance that subscribes to the queue during the few milliseconds of the
barrier and is not yet in the registry does not hold the commit back, and would let a socket
that joins it in that window stay in the room. Without a shared store (a queue but no Redis)
there is no registry: the order is published and the caller waits REVOKE_SETTLE_S instead.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any, Callable

import socketio

from nexus.errors import NexusError
from nexus.logs import log_event, user_label
from nexus.realtime import events
from nexus.realtime.sessions import SessionRegistry, SocketSession
from nexus.services import tokens

log = logging.getLogger("nexus.control")

METHOD = "nexus_control"

#: How long a revocation waits for every live instance to acknowledge it.
REVOKE_WAIT_S = 3.0
#: Without an instance registry: how long a revocation waits for the others to receive it.
REVOKE_SETTLE_S = 0.5
#: An order still in flight after this long (a queue outage) is ignored: its origin gave up on it.
ORDER_TTL_S = 10.0
#: Room names carried in one order (a demoted administrator's memberships) at most.
MAX_KEEP = 5000


class Control:
    """Carries out control orders here, and sends them to the other instances."""

    def __init__(self, server: Any, sessions: SessionRegistry, broadcaster: Any):
        self.server = server
        self.sessions = sessions
        self.broadcaster = broadcaster  # the app's facade; orders also arrive outside any app context
        self.app: Any = None
        self.chat: Any = None  # nexus.realtime.namespaces.chat.ChatContext
        self.instance_id = ""
        self.peers: Callable[[], set[str]] | None = None
        self._waiting: dict[str, _Acks] = {}

    def attach(self, *, app: Any, chat: Any, instance_id: str, peers: Callable[[], set[str]] | None) -> None:
        """What revocations need: the app (for orders that arrive outside any app context), the chat
        state of this process, this instance's id and how to list the live instances."""
        self.app, self.chat, self.instance_id, self.peers = app, chat, instance_id, peers

    # -- orders -----------------------------------------------------------------------

    def disconnect_user(self, user_id: int, reason: str) -> int:
        """Close every socket of a user, on every instance; returns how many were on this one."""
        self._publish({"action": "disconnect_user", "userId": user_id, "reason": reason})
        return self._disconnect_here(user_id, reason)

    def close_token_sockets(self, user_id: int, jti: str, reason: str) -> int:
        """Close the sockets that were opened with one token (logged out), on every instance."""
        self._publish({"action": "close_token", "userId": user_id, "jti": jti, "reason": reason})
        return self._disconnect_here(user_id, reason, jti=jti)

    def revoke(
        self,
        user_id: int,
        reason: str,
        *,
        room: str | None = None,
        keep: list[str] | None = None,
        role: str | None = None,
        last_seq: int | None = None,
    ) -> int:
        """Take a user's sockets out of a room (`room`), out of every room (neither `room` nor
        `keep`), or out of every room but `keep`, on every live instance; returns when all of them
        have done it (UNAVAILABLE otherwise). Call it inside the revoking transaction, before its
        commit (see the module docstring). `role`: the user's new role, applied to their sockets.
        Returns how many sockets were taken out of a room here."""
        order: dict[str, Any] = {
            "action": "revoke",
            "orderId": uuid.uuid4().hex,
            "origin": self.instance_id,
            "expires": time.time() + ORDER_TTL_S,
            "userId": user_id,
            "reason": reason,
            "room": room,
            "keep": None if keep is None else list(keep)[:MAX_KEEP],
            "role": role,
            "lastSeq": last_seq,
        }
        if not self._queued():
            return self._revoke_here(order)
        acks = self._expect(order["orderId"])
        try:
            self._publish(order)
            evicted = self._revoke_here(order)
            if acks is None:
                time.sleep(REVOKE_SETTLE_S)
            elif not acks.done.wait(REVOKE_WAIT_S):
                self._publish({"action": "restore", "userId": user_id, "room": room})
                self._restore_here(user_id, room)
                log_event(log, "revocation_rolled_back",
                          "revocation for user={user} room={room} not acknowledged by {missing}; rolled back",
                          level=logging.WARNING, user=user_label(user_id), room=room, missing=sorted(acks.missing))
                raise NexusError("UNAVAILABLE", "Another server did not confirm the change; try again shortly.",
                                 retry_after_ms=int(REVOKE_WAIT_S * 1000))
            return evicted
        finally:
            self._waiting.pop(order["orderId"], None)

    def forget_identities(self, *, user_id: int | None = None, jti: str | None = None) -> None:
        """Forget the verified socket tokens of one token (`jti`, revoked) or of a user (their account
        changed), here and on every live instance, which acknowledge it: a socket that connects
        anywhere once this returns is judged on the database. Call it after the change commits (a
        token verified before the commit may be kept again until then). An instance that does not
        answer within REVOKE_WAIT_S is logged; what it kept expires with IDENTITY_TTL_S, and the
        orders that close the user's or the token's sockets follow this one on the queue."""
        self._forget_here(user_id, jti)
        if not self._queued():
            return
        order = {"action": "forget_identity", "orderId": uuid.uuid4().hex, "origin": self.instance_id,
                 "userId": user_id, "jti": jti}
        try:
            acks = self._expect(order["orderId"])
        except NexusError:
            acks = None  # no registry to ask right now: wait as without one
        try:
            self._publish(order)
            if acks is None:
                time.sleep(REVOKE_SETTLE_S)
            elif not acks.done.wait(REVOKE_WAIT_S):
                log_event(log, "token_forget_unacknowledged",
                          "forgetting the tokens of user={user} not acknowledged by {missing}; they expire within "
                          "{expiresInS:.0f} s", level=logging.WARNING, user=user_label(user_id),
                          missing=sorted(acks.missing), expiresInS=tokens.IDENTITY_TTL_S)
        finally:
            self._waiting.pop(order["orderId"], None)

    def restore(self, user_id: int, room: str | None) -> None:
        """Lift a revocation mark everywhere (the user was added back to the room)."""
        if self._queued():
            self._publish({"action": "restore", "userId": user_id, "room": room})
        self._restore_here(user_id, room)

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
        action = order.get("action")
        if action == "revoke_ack":
            acks = self._waiting.get(order.get("orderId")) if order.get("origin") == self.instance_id else None
            if acks is not None:
                acks.arrived(str(order.get("instance")))
            return
        user_id, reason = order.get("userId"), str(order.get("reason", ""))[:200]
        if action == "forget_identity":
            jti = order.get("jti")
            self._forget_here(user_id if isinstance(user_id, int) else None, jti if isinstance(jti, str) else None)
            self._publish({"action": "revoke_ack", "orderId": order.get("orderId"), "origin": order.get("origin"),
                           "instance": self.instance_id})
            return
        if not isinstance(user_id, int):
            return
        if action == "disconnect_user":
            self._disconnect_here(user_id, reason)
        elif action == "close_token" and isinstance(order.get("jti"), str):
            self._disconnect_here(user_id, reason, jti=order["jti"])
        elif action == "revoke":
            self._revoke_order(order)
        elif action == "restore":
            room = order.get("room")
            self._restore_here(user_id, room if isinstance(room, str) else None)

    # -- carrying orders out ------------------------------------------------------------

    def _revoke_order(self, order: dict[str, Any]) -> None:
        expires = order.get("expires")
        if not isinstance(expires, (int, float)) or time.time() > expires:
            log_event(log, "revocation_too_late", "ignored a revocation order that arrived too late (user={user})",
                      level=logging.WARNING, user=user_label(order.get("userId")))
            return
        if order.get("room") is not None and not isinstance(order["room"], str):
            return
        if order.get("keep") is not None and not isinstance(order["keep"], list):
            return
        self._revoke_here(order, later=self.server.start_background_task)
        self._publish({"action": "revoke_ack", "orderId": order.get("orderId"), "origin": order.get("origin"),
                       "instance": self.instance_id})

    def _revoke_here(self, order: dict[str, Any], later: Callable[..., Any] | None = None) -> int:
        """Take the user's sockets of this process out of the rooms, in memory and without yielding;
        then (now, or in `later`) the announcements that need I/O: typing stopped, room_left."""
        if self.chat is None:
            return 0
        user_id, room, reason = order["userId"], order.get("room"), str(order.get("reason", ""))[:200]
        keep = None
        if isinstance(order.get("keep"), list):
            keep = {name for name in order["keep"] if isinstance(name, str)}
        gate, live = self.chat.gate, self.chat.live
        evicted: list[tuple[SocketSession, str]] = []
        if keep is None:
            gate.revoke(room, user_id)
        for sid in self.sessions.sids_of_user(user_id):
            session = self.sessions.get(sid)
            if session is None:
                continue
            if isinstance(order.get("role"), str):
                session.role = order["role"]  # its next join is judged by the new role
            if room is not None:
                names = [room] if room in live.rooms_of(sid) or self._in_room(session, room) else []
            else:
                names = [name for name in live.rooms_of(sid) if keep is None or name not in keep]
            for name in names:
                if keep is not None:
                    gate.revoke(name, user_id)
                self.server.leave_room(sid, name, namespace=session.namespace)
                gate.forget(session.namespace, name, sid)
                evicted.append((session, name))
        for session, name in evicted:
            payload = {"roomId": name, "room": name, "reason": reason}
            if order.get("lastSeq") is not None:
                payload["lastSeq"] = order["lastSeq"]
            self.broadcaster.reply(events.REMOVED_FROM_ROOM, payload, sid=session.sid, namespace=session.namespace)
        if evicted:
            log_event(log, "user_removed_from_rooms", "took user={user} out of {rooms} room(s) on {sockets} socket(s)",
                      user=user_label(user_id), rooms=len({name for _, name in evicted}),
                      sockets=len({s.sid for s, _ in evicted}), reason=reason)
            if later is None:
                self._announce(evicted)
            else:
                later(self._announce_in_context, evicted)
        return len({session.sid for session, _ in evicted})

    def _in_room(self, session: SocketSession, room: str) -> bool:
        try:
            return room in (self.server.rooms(session.sid, namespace=session.namespace) or ())
        except Exception:  # the socket is gone
            return False

    def _announce_in_context(self, evicted: list[tuple[SocketSession, str]]) -> None:
        with self.app.app_context():
            self._announce(evicted)

    def _announce(self, evicted: list[tuple[SocketSession, str]]) -> None:
        """Typing stopped and, for a member's last socket, `room_left` to the others in the room."""
        for session, name in evicted:
            actor = session.actor()
            try:
                self.chat.typing.stop(actor, name)
                self.chat.live.left(actor, name, session.sid)
            except Exception as exc:  # a Redis outage, say: the sockets are out of the room all the same
                log_event(log, "room_leave_bookkeeping_failed",
                          "after taking sid={sid} out of {room}: {error}: {detail}", level=logging.WARNING,
                          sid=session.sid, room=name, error=type(exc).__name__, detail=str(exc))

    def _forget_here(self, user_id: int | None, jti: str | None) -> None:
        """Drop this instance's verified tokens of `jti`, else of `user_id` (neither: nothing)."""
        if self.app is None or (user_id is None and jti is None):
            return
        cache = tokens.identity_cache(self.app)
        if jti is not None:
            cache.forget(jti=jti)
        else:
            cache.forget(user_id=user_id)

    def _restore_here(self, user_id: int, room: str | None) -> None:
        if self.chat is not None:
            self.chat.gate.restore(room, user_id)

    def _queued(self) -> bool:
        return isinstance(self.server.manager, socketio.PubSubManager)

    def _expect(self, order_id: str) -> _Acks | None:
        """Who must acknowledge an order: the other live instances (None: no registry to ask)."""
        if self.peers is None:
            return None
        try:
            peers = set(self.peers()) - {self.instance_id}
        except Exception as exc:
            log.warning("cannot list the live instances (%s: %s)", type(exc).__name__, exc)
            raise NexusError("UNAVAILABLE", "The shared store is unreachable; try again shortly.",
                             retry_after_ms=int(REVOKE_WAIT_S * 1000)) from None
        acks = _Acks(peers)
        self._waiting[order_id] = acks
        return acks

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
            log_event(log, "user_disconnected", "disconnected", user=user_label(user_id), sockets=len(sids),
                      reason=reason)
        return len(sids)


class _Acks:
    """The instances that have yet to acknowledge one order."""

    def __init__(self, peers: set[str]):
        self.missing = set(peers)
        self.done = threading.Event()
        if not self.missing:
            self.done.set()

    def arrived(self, instance: str) -> None:
        self.missing.discard(instance)
        if not self.missing:
            self.done.set()


def instance_roster(stores: Any) -> Callable[[], set[str]] | None:
    """The live instances as the shared store's registry lists them (`<prefix>:instances`, each
    alive while its `<prefix>:inst:<id>` heartbeat key exists); None without a shared store."""
    tally = getattr(stores, "tally", None)
    client, prefix = getattr(tally, "client", None), getattr(tally, "prefix", None)
    if client is None or not isinstance(prefix, str):
        return None

    def live() -> set[str]:
        ids = sorted(client.smembers(f"{prefix}:instances"))
        if not ids:
            return set()
        pipe = client.pipeline(transaction=False)
        for instance in ids:
            pipe.exists(f"{prefix}:inst:{instance}")
        return {instance for instance, alive in zip(ids, pipe.execute()) if alive}

    return live
