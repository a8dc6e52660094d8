"""Chat events (rooms, messages, typing, history, catch-up), on `/` and on the class-based `/chat`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nexus.errors import NexusError
from nexus.realtime import broadcast, events
from nexus.realtime.gate import RoomGate
from nexus.realtime.namespaces.base import NexusNamespace, rate_cost
from nexus.realtime.sessions import SocketSession
from nexus.schemas import load, schema
from nexus.schemas.chat import (
    HistorySchema,
    JoinRoomSchema,
    MarkReadSchema,
    MessageCreateSchema,
    MessageEditSchema,
    MessageRefSchema,
    RoomRefSchema,
    TypingSchema,
)
from nexus.services import messages, rooms
from nexus.services.rooms import LiveMembership
from nexus.services.typing import TypingTracker

MAX_CATCHUP_ROOMS = 50


@dataclass
class ChatContext:
    """What the chat handlers share in one process."""

    live: LiveMembership
    typing: TypingTracker
    gate: RoomGate


class ChatEvents:
    """Chat handlers and their connection hooks; mixed in ahead of NexusNamespace."""

    config: Any

    def __init__(self, namespace: str, *, chat: ChatContext, **kwargs: Any):
        super().__init__(namespace, **kwargs)  # type: ignore[call-arg]
        self.chat = chat

    def after_connect(self, session: SocketSession, auth: Any) -> None:
        self.catch_up_on_connect(session, auth)

    def before_identity_change(self, session: SocketSession) -> None:
        self.leave_chat_rooms(session)

    def socket_closed(self, session: SocketSession) -> None:
        self.leave_chat_rooms(session)

    # -- rooms ----------------------------------------------------------------------

    @rate_cost(2)
    def on_join_room(self, session: SocketSession, payload: Any = None, *_: Any) -> dict[str, Any]:
        data = load(schema(JoinRoomSchema), payload)
        return self._join(session, data["room"], data.get("since"), kind=data.get("kind"))

    def on_leave_room(self, session: SocketSession, payload: Any = None, *_: Any) -> dict[str, Any]:
        name = load(schema(RoomRefSchema), payload)["room"]
        if not self.chat.live.has_socket(name, session.sid):
            raise NexusError("NOT_FOUND", f"You are not in {name!r}.")
        count = self._leave(session, name)
        return {"roomId": name, "room": name, "memberCount": count}

    def on_room_info(self, session: SocketSession, payload: Any = None, *_: Any) -> dict[str, Any]:
        name = load(schema(RoomRefSchema), payload)["room"]
        return {"room": rooms.info(session.actor(), rooms.find_room(name), self.chat.live), "roomId": name}

    # -- messages -------------------------------------------------------------------

    @rate_cost(3)
    def on_send_message(self, session: SocketSession, payload: Any = None, *_: Any) -> dict[str, Any]:
        data = load(schema(MessageCreateSchema, max_length=self.config.max_message_length), payload)
        actor = session.actor()
        if "room" in data:
            if not actor.is_guest and not self.chat.live.has_socket(data["room"], session.sid):
                raise self._send_refusal(session, data["room"])
            sent = messages.send_to_room(actor, data["room"], data)
            self.chat.typing.stop(actor, data["room"])
        else:
            sent = messages.send_direct(actor, data["to"], data, sender_sid=session.sid)
        return {"message": sent.message, "messageId": sent.message["id"], "duplicate": not sent.created}

    @rate_cost(2)
    def on_edit_message(self, session: SocketSession, payload: Any = None, *_: Any) -> dict[str, Any]:
        data = load(schema(MessageEditSchema, max_length=self.config.max_message_length), payload)
        return {"message": messages.edit(session.actor(), data["message_id"], data["content"])}

    @rate_cost(2)
    def on_delete_message(self, session: SocketSession, payload: Any = None, *_: Any) -> dict[str, Any]:
        data = load(schema(MessageRefSchema), payload)
        return {"message": messages.delete(session.actor(), data["message_id"])}

    @rate_cost(2)
    def on_get_history(self, session: SocketSession, payload: Any = None, *_: Any) -> dict[str, Any]:
        query = load(schema(HistorySchema), payload)
        return messages.history_page(session.actor(), query, max_limit=self.config.history_max_limit)

    def on_mark_read(self, session: SocketSession, payload: Any = None, *_: Any) -> dict[str, Any]:
        data = load(schema(MarkReadSchema), payload)
        actor = session.actor()
        if "room" in data:
            seq = rooms.mark_read(actor, rooms.find_room(data["room"]), data["seq"])
            return {"roomId": data["room"], "lastReadSeq": seq}
        seq = rooms.mark_read(actor, messages.conversation(actor, data["with_user"]), data["seq"])
        return {"with": str(data["with_user"]), "lastReadSeq": seq}

    # -- typing ---------------------------------------------------------------------

    def on_typing_start(self, session: SocketSession, payload: Any = None, *_: Any) -> dict[str, Any]:
        name = self._typing_room(session, payload)
        self.chat.typing.start(session.actor(), name, session.sid)
        return {"roomId": name}

    def on_typing_stop(self, session: SocketSession, payload: Any = None, *_: Any) -> dict[str, Any]:
        name = self._typing_room(session, payload)
        self.chat.typing.stop(session.actor(), name)
        return {"roomId": name}

    # -- connection hooks -----------------------------------------------------------

    def catch_up_on_connect(self, session: SocketSession, auth: Any) -> dict[str, Any]:
        """Rejoin the rooms of `auth.since` ({room: lastSeq}) and replay what was missed."""
        since = auth.get("since") if isinstance(auth, dict) else None
        if not isinstance(since, dict):
            return {}
        results: dict[str, Any] = {}
        for name, seq in list(since.items())[:MAX_CATCHUP_ROOMS]:
            try:
                ref = load(schema(RoomRefSchema), {"room": name, "since": seq})
                results[ref["room"]] = self._join(session, ref["room"], ref["since"])
            except NexusError as exc:
                results[str(name)[:64]] = {"success": False, "error": exc.to_dict()}
        return results

    def leave_chat_rooms(self, session: SocketSession) -> None:
        for name in self.chat.live.rooms_of(session.sid):
            self._leave(session, name)
        self.chat.typing.stop_everywhere(session.actor(), session.sid)

    # -- helpers --------------------------------------------------------------------

    def _join(self, session: SocketSession, name: str, since: int | None, *, kind: str | None = None
              ) -> dict[str, Any]:
        actor = session.actor()
        joined = self.chat.live.rooms_of(session.sid)
        if self.socketio.server.manager.is_sid_room(self.namespace, name):
            raise NexusError("FORBIDDEN", f"{name!r} is managed by the server and cannot be joined by name.")
        if name not in joined and len(joined) >= self.config.max_rooms_per_socket:
            raise NexusError("LIMIT_REACHED", f"At most {self.config.max_rooms_per_socket} rooms per connection.")
        room = rooms.join(
            actor, name, auto_create=self.config.auto_create_rooms, guests_can_chat=self.config.guests_can_chat,
            kind=kind,
        )
        # Access revoked while the database was asked (nexus.realtime.control): checked with no
        # yield before the socket enters the room, so a revocation either finds it in or keeps it out.
        if self.chat.gate.is_revoked(room.name, session.user_id) or session.role != actor.role:
            raise NexusError("FORBIDDEN", f"You can no longer take part in {room.name!r}.")
        if since is not None:
            # Live messages wait until the replay is done (see nexus.realtime.gate).
            self.chat.gate.hold(self.namespace, room.name, session.sid)
        if not self.chat.live.has_socket(room.name, session.sid):
            sequencer = getattr(self.socketio.server.manager, "sequencer", None)
            if sequencer is not None:  # live messages of this room go out here in seq order from now on
                sequencer.seed(self.namespace, room.name, room.last_seq)
            self.enter_room(session.sid, room.name)
            self.chat.live.entered(actor, room.name, session.sid)
        result: dict[str, Any] = {"roomId": room.name, "room": room.name, "kind": room.kind}
        if since is not None:
            result["catchUp"] = self._catch_up(session, room, since)
        result["memberCount"] = len(self.chat.live.members(room.name))
        result["lastSeq"] = max(room.last_seq, result.get("catchUp", {}).get("lastSeq", 0))
        return result

    def _catch_up(self, session: SocketSession, room: Any, since: int) -> dict[str, Any]:
        """Replay what the socket missed since `since`, then what arrived live meanwhile, in seq order."""
        try:
            caught = messages.missed(session.actor(), room, since, self.config.catchup_limit)
        except Exception:
            self._replay(session, self.chat.gate.release(self.namespace, room.name, session.sid, None)[0])
            raise
        self._replay(session, caught["messages"])
        replayed_up_to = caught["lastSeq"] if caught["complete"] else None
        late, kept_up = self.chat.gate.release(self.namespace, room.name, session.sid, replayed_up_to)
        self._replay(session, late)
        complete = caught["complete"] and kept_up
        report: dict[str, Any] = {
            "complete": complete,
            "since": since,
            "lastSeq": max([caught["lastSeq"], *(message["seq"] for message in late)]),
            "count": len(caught["messages"]) + len(late),
        }
        if not complete:
            report["reason"] = caught.get("reason", "GAP_TOO_LARGE")
        return report

    def _leave(self, session: SocketSession, name: str) -> int:
        self.chat.typing.stop(session.actor(), name)
        self.leave_room(session.sid, name)
        self.chat.gate.forget(self.namespace, name, session.sid)
        return self.chat.live.left(session.actor(), name, session.sid)

    def _replay(self, session: SocketSession, missed: list[dict[str, Any]]) -> None:
        for message in missed:
            if self.chat.gate.is_revoked(message.get("roomId") or "", session.user_id):
                return  # taken out of the room meanwhile: nothing more of it
            broadcast.reply(events.ROOM_MESSAGE, message, sid=session.sid, namespace=self.namespace)

    def _send_refusal(self, session: SocketSession, name: str) -> NexusError:
        """Why a socket that is not in a room may not send to it. Sending takes a socket in the room
        (join_room first), so that the sender's socket gets the message like every other member's
        and in seq order; only this refusal asks the database: a room that does not exist or that
        the user may not take part in is refused as such, any other with NOT_IN_ROOM (join, then send)."""
        room = rooms.find_room(name)
        rooms.require_member(session.actor(), room)
        return NexusError("NOT_IN_ROOM", f"Join {name!r} (join_room) before sending to it.",
                          details={"roomId": name})

    def _typing_room(self, session: SocketSession, payload: Any) -> str:
        name = load(schema(TypingSchema), payload)["room"]
        if not self.chat.live.has_socket(name, session.sid):
            # Typing is frequent and cheap: refused from the in-memory room index alone, without
            # asking the database why (joining answers that: ROOM_NOT_FOUND, FORBIDDEN).
            raise NexusError("NOT_IN_ROOM", f"Join {name!r} (join_room) before typing in it.",
                             details={"roomId": name})
        return name


class ChatNamespace(ChatEvents, NexusNamespace):
    """`/chat`: the chat events alone, for clients that want one area per connection."""
