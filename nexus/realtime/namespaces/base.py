"""What every Nexus namespace shares: authentication on connect, managed rooms, the ack contract."""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable

from flask import request
from flask_socketio import ConnectionRefusedError, Namespace

from nexus import outages
from nexus.config import Config
from nexus.errors import NexusError
from nexus.extensions import db
from nexus.logs import log_event, user_label
from nexus.protocol.packets import event_has_binary
from nexus.realtime import acks, broadcast, events
from nexus.realtime.refusals import RefusalLog
from nexus.realtime.sessions import SessionRegistry, SocketSession
from nexus.services import tokens
from nexus.realtime.shutdown import Shutdown
from nexus.services.metrics import Metrics
from nexus.services.presence import Presence
from nexus.services.ratelimit import EventLimiter, rate_key

log = logging.getLogger("nexus.realtime")
_degraded_logged: dict[str, float] = {}


def degraded(what: str, exc: BaseException) -> None:
    """Presence bookkeeping failed (Redis down, say): the connection and its events go on. An outage
    is logged once by the outage tracker; any other failure, one warning a minute per kind, without
    a traceback."""
    if outages.refuse(exc) is not None:
        return
    now = time.monotonic()
    if now - _degraded_logged.get(what, 0.0) > 60:
        _degraded_logged[what] = now
        log_event(log, "degraded", "{what} failed ({error}: {detail}); connections and events go on",
                  level=logging.WARNING, what=what, error=type(exc).__name__, detail=str(exc))

Handler = Callable[..., Any]

DEFAULT_COST = 1


def takes_binary(handler: Handler) -> Handler:
    """Declare that an event handler accepts binary arguments (`bytes`); every other event refuses
    a binary packet with VALIDATION_ERROR, so nothing unvalidated is stored or broadcast."""
    handler.takes_binary = True  # type: ignore[attr-defined]
    return handler


def rate_cost(units: int) -> Callable[[Handler], Handler]:
    """Declare what an event handler costs against the sender's rate limit (default 1 unit)."""

    def mark(handler: Handler) -> Handler:
        handler.rate_cost = units  # type: ignore[attr-defined]
        return handler

    return mark


class NexusNamespace(Namespace):
    """Base of the default, chat, presence and admin namespaces.

    Subclasses write `on_<event>(self, session, *args)` handlers that validate, call one
    service and return the ack fields (a dict) or raise NexusError; this class turns that
    into the wire contract, whether or not the client asked for an ack.
    """

    #: Guests may connect to this namespace (when the configuration allows guests at all).
    guests_allowed = True
    #: Events a socket may still send once its token has expired (to renew it, or to stay alive).
    allowed_after_expiry = frozenset({"ping", "authenticate"})

    def __init__(
        self,
        namespace: str,
        *,
        config: Config,
        sessions: SessionRegistry,
        presence: Presence,
        limiter: EventLimiter,
        metrics: Metrics,
        shutdown: Shutdown,
    ):
        super().__init__(namespace)
        self.config = config
        self.sessions = sessions
        self.presence = presence
        self.limiter = limiter
        self.metrics = metrics
        self.shutdown = shutdown
        self.in_flight = shutdown.in_flight
        # Sockets greeted after their CONNECT packet: only those are counted in presence.
        self.greeted: set[str] = set()
        self.refusals = RefusalLog(namespace)

    # -- connection ---------------------------------------------------------------

    def on_connect(self, auth: Any = None) -> None:
        """Accept or refuse the CONNECT; nothing is sent to the client before its CONNECT packet,
        so rooms, presence and the welcome wait for `greet`."""
        if self.shutdown.closing:
            error = NexusError("UNAVAILABLE", "This server is shutting down; reconnect in a moment.")
            raise ConnectionRefusedError(error.message, error.to_dict())
        try:
            self._open_session(request.sid, auth)
        except NexusError as exc:
            log_event(log, "connection_refused", "connection refused", ns=self.namespace, code=exc.code)
            raise ConnectionRefusedError(exc.message, exc.to_dict()) from None
        except Exception as exc:  # the database is down, say: refuse, never crash the server
            error = acks.unexpected(exc, event="connect", sid=request.sid)
            raise ConnectionRefusedError(error.message, error.to_dict()) from None

    def greet(self, sid: str, auth: Any = None) -> None:
        """Called by the packet layer once the CONNECT packet is out: the managed rooms, presence,
        then the welcome and the after-connect steps (chat catch-up), in that order."""
        session = self.sessions.get(sid)
        environ = self.socketio.server.get_environ(sid, namespace=self.namespace)
        if session is None or not environ:
            return  # gone meanwhile
        with environ["flask.app"].app_context():
            self._greet(session, auth)

    def _greet(self, session: SocketSession, auth: Any) -> None:
        self.greeted.add(session.sid)
        self.join_managed_rooms(session)
        self.metrics.connected()
        log_event(log, "connected", ns=self.namespace, sid=session.sid, user=user_label(session.user_id))
        try:
            self.presence.connected(session.actor(), session.sid)
        except Exception as exc:
            outages.rollback(db.session)
            degraded("presence on connect", exc)
        for step in (lambda: self.welcome(session), lambda: self.after_connect(session, auth)):
            try:
                step()
            except Exception as exc:  # the connection stands; the client is told
                outages.rollback(db.session)
                error = acks.unexpected(exc, event="connect", sid=session.sid)
                broadcast.reply(events.ERROR, {**error.to_dict(), "event": "connect"}, sid=session.sid,
                                namespace=self.namespace)

    def on_disconnect(self, reason: Any = None) -> None:
        session = self.sessions.get(request.sid)
        greeted = request.sid in self.greeted
        self.greeted.discard(request.sid)
        if session is not None:
            try:
                self.socket_closed(session)
            except Exception as exc:
                outages.rollback(db.session)
                acks.unexpected(exc, event="disconnect", sid=session.sid)
            try:
                if greeted:  # a socket closed before its greeting was never counted in presence
                    self.presence.disconnected(session.actor())
            except Exception as exc:
                outages.rollback(db.session)
                degraded("presence on disconnect", exc)
            self.sessions.remove(request.sid)
            self.limiter.forget_socket(request.sid)
            self.refusals.closed(request.sid)
            log_event(log, "disconnected", ns=self.namespace, sid=session.sid, user=user_label(session.user_id),
                      reason=reason)

    def welcome(self, session: SocketSession) -> None:
        """Called once a connection is accepted; namespaces may greet the client."""

    def after_connect(self, session: SocketSession, auth: Any) -> None:
        """Called after the welcome (chat catch-up)."""

    def before_identity_change(self, session: SocketSession) -> None:
        """Called before `authenticate` switches the socket to another identity."""

    def socket_closed(self, session: SocketSession) -> None:
        """Called on disconnect, before the socket is forgotten (not named on_...: every on_<name>
        method is an event clients can send)."""

    def _open_session(self, sid: str, auth: Any) -> SocketSession:
        token = _handshake_token(auth)
        session = SocketSession(sid=sid, namespace=self.namespace, remote_addr=request.remote_addr)
        if token is None:
            if not (self.config.allow_guests and self.guests_allowed):
                raise NexusError("UNAUTHORIZED", "Authentication token required.")
        else:
            # A token this instance verified needs no database; the welcome does: refused while it is down.
            tracker = outages.tracker()
            if tracker is not None and outages.DATABASE in tracker.down():
                raise outages.unavailable(outages.DATABASE)
            _apply_identity(session, tokens.resolve_socket_token(token))
            self._check_socket_cap(session.user_id)
        self.check_access(session)
        self.sessions.add(session)
        return session

    def _check_socket_cap(self, user_id: int | None) -> None:
        cap = self.config.max_sockets_per_user
        if user_id is not None and len(self.sessions.sids_of_user(user_id)) >= cap:
            raise NexusError("LIMIT_REACHED", f"At most {cap} connections per user on one server; close some.")

    def check_access(self, session: SocketSession) -> None:
        """Raise NexusError to refuse a connection (the admin namespace refuses non-admins)."""

    def authenticate(self, sid: str, token: Any) -> SocketSession:
        """Turn a socket into the token's user: leave the old identity's rooms, join the new ones."""
        identity = tokens.resolve_socket_token(token)
        current = self.sessions.get(sid)
        if current is None:
            raise NexusError("UNAUTHORIZED", "This connection is closing.")
        if identity.account.id != current.user_id:
            self._check_socket_cap(identity.account.id)
        if identity.account.id != current.user_id or identity.account.role != current.role:
            # Another identity leaves the chat rooms; a renewed token of the same user and role keeps
            # them, so that the socket goes on receiving (and may go on sending) where it was.
            self.before_identity_change(current)
        self.leave_managed_rooms(current)
        self.presence.disconnected(current.actor())
        values = SocketSession(sid=sid, namespace=self.namespace)
        _apply_identity(values, identity)
        session = self.sessions.set_user(
            sid,
            user_id=values.user_id,
            username=values.username,
            display_name=values.display_name,
            role=values.role,
            department=values.department,
            token_jti=values.token_jti,
            token_expires_at=values.token_expires_at,
        )
        self.join_managed_rooms(session)
        self.presence.connected(session.actor(), sid)
        return session

    def join_managed_rooms(self, session: SocketSession) -> None:
        for room in managed_rooms(session):
            self.enter_room(session.sid, room)

    def leave_managed_rooms(self, session: SocketSession) -> None:
        for room in managed_rooms(session):
            self.leave_room(session.sid, room)

    # -- events -------------------------------------------------------------------

    def trigger_event(self, event: str, *args: Any) -> Any:
        if event in ("connect", "disconnect"):
            return super().trigger_event(event, *args)
        sid, *data = args
        return self.handle_event(event, sid, data)

    def handle_event(self, event: Any, sid: str, args: list[Any]) -> Any:
        """Handle one event of a socket and return its ack payload (None when the client asked for
        no ack). The hot path, called by the packet layer straight from the decoded frame.
        Flask-SocketIO would build a Flask request context per event (URL matching, the cookie
        session); Nexus's handlers need only the app context (database session, current_app)."""
        environ = self.socketio.server.get_environ(sid, namespace=self.namespace)
        if not environ:
            return None  # the socket is gone
        handler = getattr(self, "on_" + event, None) if isinstance(event, str) else None
        with environ["flask.app"].app_context():
            return self._dispatch(event, handler, sid, args)

    def _dispatch(self, event: str, handler: Handler | None, sid: str, args: list[Any]) -> Any:
        metrics = self.metrics
        label = event if handler is not None else "unknown"
        metrics.received(label)
        started = time.perf_counter()
        try:
            with self.in_flight:
                return self._attempt(event, handler, sid, args)
        finally:
            metrics.handled(label, time.perf_counter() - started)

    def _attempt(self, event: str, handler: Handler | None, sid: str, args: list[Any]) -> Any:
        try:
            session = self.sessions.get(sid)
            if session is None:
                raise NexusError("UNAUTHORIZED", "This connection is closing.")
            self._limit(session, event, getattr(handler, "rate_cost", DEFAULT_COST))  # unknown ones too
            if handler is None:
                raise NexusError("UNKNOWN_EVENT", f"Unknown event {str(event)[:64]!r}.")
            if event_has_binary() and not getattr(handler, "takes_binary", False):
                raise NexusError("VALIDATION_ERROR", f"{str(event)[:64]!r} does not take binary content.")
            expires = session.token_expires_at
            if expires is not None and time.time() >= expires and event not in self.allowed_after_expiry:
                raise NexusError("TOKEN_EXPIRED", "Your token has expired; send `authenticate` with a new one.")
            self._touch(session)
            result = handler(session, *args)
            return self._answer(event, sid, acks.ok(**(result or {})))
        except NexusError as exc:
            return self._answer(event, sid, acks.failure(exc))
        except Exception as exc:
            return self._answer(event, sid, acks.failure(acks.unexpected(exc, event=event, sid=sid)))

    def _limit(self, session: SocketSession, event: str, cost: int) -> None:
        verdict = self.limiter.check(rate_key(session.user_id, session.remote_addr), session.sid, cost)
        if verdict.allowed:
            return
        name = str(event)[:64]
        # Counted here; logged with the connection's other refusals, summarised (nexus.realtime.refusals).
        self.metrics.rate_limited.labels(name if hasattr(self, "on_" + name) else "unknown").inc()
        if verdict.notify:
            broadcast.reply(events.RATE_LIMIT_EXCEEDED, rate_limit_notice(name, verdict.retry_after_ms),
                            sid=session.sid, namespace=self.namespace)
        if verdict.cut_off and self.refusals.first_cut_off(session.sid):  # once, whatever is still queued
            log_event(log, "rate_limit_disconnect", "disconnecting sid={sid}: kept sending while rate limited",
                      level=logging.WARNING, sid=session.sid, ns=self.namespace, user=user_label(session.user_id))
            self.socketio.start_background_task(self.socketio.server.disconnect, session.sid, self.namespace)
        raise NexusError("RATE_LIMITED", f"Too many events; retry in {verdict.retry_after_ms} ms.",
                         retry_after_ms=verdict.retry_after_ms)

    def _touch(self, session: SocketSession) -> None:
        # Activity bookkeeping must never cost the event itself (a Redis outage, say).
        try:
            self.presence.touch(session.actor())
        except Exception as exc:
            degraded("presence activity", exc)

    def _answer(self, event: str, sid: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        if not payload["success"]:
            self.metrics.error(payload["error"]["code"])
            session = self.sessions.get(sid)
            user = session.user_id if session is not None else None
            self.refusals.refused(sid, str(user or "guest"), payload["error"]["code"], str(event)[:64])
        if acks.ack_requested():
            return payload
        if not payload["success"]:
            broadcast.reply(
                events.ERROR, {**payload["error"], "event": str(event)[:64]}, sid=sid, namespace=self.namespace
            )
        return None


def rate_limit_notice(event: str, retry_after_ms: int) -> dict[str, Any]:
    """The `rate_limit_exceeded` event: the event refused, when to retry, and a sentence to show."""
    seconds = max(1, math.ceil(retry_after_ms / 1000))
    return {
        "event": event,
        "retryAfterMs": retry_after_ms,
        "message": f"Too many requests, please slow down: try again in {seconds} s.",
    }


def managed_rooms(session: SocketSession) -> list[str]:
    """The server-managed rooms a socket belongs to (none for a guest)."""
    if session.user_id is None:
        return []
    rooms = [events.user_room(session.user_id), events.ALL_USERS_ROOM]
    role_room = events.ROLE_ROOMS.get(session.role)
    if role_room:
        rooms.append(role_room)
    if session.department:
        rooms.append(events.department_room(session.department))
    return rooms


def _handshake_token(auth: Any) -> str | None:
    # Clients send the token in auth (io(url, {auth: {token}})) or as ?token= in the query string; auth wins.
    token = None
    if isinstance(auth, dict):
        token = auth.get("token")
        if token is not None and not isinstance(token, str):
            raise NexusError("INVALID_TOKEN", "auth.token must be a string.")
    if not token:
        token = request.args.get("token")
    return token or None


def _apply_identity(session: SocketSession, identity: tokens.SocketIdentity) -> None:
    user = identity.account
    session.user_id = user.id
    session.username = user.username
    session.display_name = user.display_name
    session.role = user.role
    session.department = user.department
    session.token_jti = identity.jti
    session.token_expires_at = identity.expires_at
