"""Schemas of the chat events and REST bodies (bare values and objects, as clients send them)."""
from __future__ import annotations

import re
from typing import Any

from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates_schema,
)

from nexus.models import MESSAGE_TYPES
from nexus.schemas import MAX_ID

ROOM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
ROOM_NAME_ERROR = "1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"
CLIENT_MSG_ID = validate.Regexp(r"^[A-Za-z0-9_.:-]{1,64}\Z", error="1 to 64 letters, digits or _ . : -")


#: What clean_text removes: control characters but newline and tab, surrogates, the byte order
#: mark, and the bidirectional embeddings, overrides and isolates (they reorder the text around
#: them on screen: "txt.exe" shown as "exe.txt"). Format characters that text needs stay: the
#: zero-width joiner of emoji sequences (family, rainbow flag) and of Indic and Persian scripts,
#: and left-to-right and right-to-left marks. Characters Python's Unicode tables do not know yet
#: (emoji newer than them) stay too.
_REMOVED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufeff\u202a-\u202e\u2066-\u2069]")


def clean_text(value: str) -> str:
    """Trim and remove control characters (newlines and tabs are kept): see _REMOVED."""
    return _REMOVED.sub("", value).strip()


def clean_content(data: dict[str, Any], max_length: int, *, required: bool) -> dict[str, Any]:
    """Clean `content` in place: not empty when required, at most max_length characters."""
    data["content"] = clean_text(data["content"])
    if required and not data["content"]:
        raise ValidationError("Must not be empty.", "content")
    if len(data["content"]) > max_length:
        raise ValidationError(f"At most {max_length} characters.", "content")
    return data


def room_alias(data: Any, key: str, alias: str) -> Any:
    """Accept a bare room name, or {alias} where {key} is expected."""
    if isinstance(data, str):
        return {key: data}
    if isinstance(data, dict) and key not in data and alias in data:
        return {**data, key: data[alias]}
    return data


class RoomName(fields.String):
    """A client-chosen room name."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        name = super()._deserialize(value, attr, data, **kwargs)
        if not ROOM_NAME.match(name):
            raise ValidationError(ROOM_NAME_ERROR)
        return name


class RoomRefSchema(Schema):
    """`join_room` / `leave_room` / `room_info`: a bare room name ("general") or {room} / {roomId}."""

    class Meta:
        unknown = EXCLUDE

    room = RoomName(required=True)
    since = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=0, max=2**53))

    @pre_load
    def _shapes(self, data: Any, **_: Any) -> Any:
        if isinstance(data, str):
            return {"room": data}
        if isinstance(data, dict) and "room" not in data and "roomId" in data:
            return {**data, "room": data["roomId"]}
        if not isinstance(data, dict):
            raise ValidationError("Send a room name or {room}.", "room")
        return data


class JoinRoomSchema(RoomRefSchema):
    """`join_room`: a room reference, and optionally the kind of room asked for (a room made by this
    join is of that kind; an existing room of another kind is refused)."""

    kind = fields.String(validate=validate.OneOf(("public", "private")))


class AttachmentSchema(Schema):
    """What an image or file message carries: a link and metadata, never the bytes."""

    class Meta:
        unknown = RAISE

    url = fields.Url(required=True, schemes={"http", "https"}, validate=validate.Length(max=2048))
    name = fields.String(validate=validate.Length(min=1, max=255))
    size = fields.Integer(strict=True, validate=validate.Range(min=0, max=10**12))
    mime_type = fields.String(data_key="mimeType", validate=validate.Regexp(r"^[\w.+-]+/[\w.+-]+\Z"))
    width = fields.Integer(strict=True, validate=validate.Range(min=1, max=100_000))
    height = fields.Integer(strict=True, validate=validate.Range(min=1, max=100_000))


class MessageCreateSchema(Schema):
    """`send_message`: {roomId, content, type} to a room, or {to, content, type} to one user."""

    class Meta:
        unknown = EXCLUDE

    room = RoomName(data_key="roomId")
    to = fields.Integer(strict=False, validate=validate.Range(min=1, max=MAX_ID))
    content = fields.String(required=True)
    type = fields.String(load_default="text", validate=validate.OneOf(MESSAGE_TYPES))
    attachment = fields.Nested(AttachmentSchema)
    client_msg_id = fields.String(data_key="clientMsgId", validate=CLIENT_MSG_ID)

    def __init__(self, *, max_length: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.max_length = max_length

    @pre_load
    def _shape(self, data: Any, **_: Any) -> Any:
        if not isinstance(data, dict):
            raise ValidationError("Send an object: {roomId, content, type} or {to, content, type}.", "_schema")
        if "roomId" not in data and "room" in data:
            return {**data, "roomId": data["room"]}
        return data

    @validates_schema
    def _target(self, data: dict[str, Any], **_: Any) -> None:
        if ("room" in data) == ("to" in data):
            raise ValidationError("Give exactly one of roomId and to.", "roomId")
        if data.get("type", "text") != "text" and "attachment" not in data:
            raise ValidationError("An image or file message needs an attachment {url, ...}.", "attachment")
        if data.get("type", "text") == "text" and "attachment" in data:
            raise ValidationError("Only image and file messages carry an attachment.", "attachment")

    @post_load
    def _clean(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return clean_content(data, self.max_length, required=data.get("type", "text") == "text")


class MessageEditSchema(Schema):
    """`edit_message`: {messageId, content}."""

    class Meta:
        unknown = EXCLUDE

    message_id = fields.Integer(data_key="messageId", required=True, strict=False, validate=validate.Range(min=1, max=MAX_ID))
    content = fields.String(required=True)

    def __init__(self, *, max_length: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.max_length = max_length

    @post_load
    def _clean(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return clean_content(data, self.max_length, required=True)


class MessageRefSchema(Schema):
    """`delete_message`: {messageId} or the id alone."""

    class Meta:
        unknown = EXCLUDE

    message_id = fields.Integer(data_key="messageId", required=True, strict=False, validate=validate.Range(min=1, max=MAX_ID))

    @pre_load
    def _shape(self, data: Any, **_: Any) -> Any:
        if isinstance(data, (int, str)) and not isinstance(data, bool):
            return {"messageId": data}
        return data


class TypingSchema(Schema):
    """`typing_start` / `typing_stop`: "roomId" or {roomId}."""

    class Meta:
        unknown = EXCLUDE

    room = RoomName(data_key="roomId", required=True)

    @pre_load
    def _shape(self, data: Any, **_: Any) -> Any:
        return room_alias(data, "roomId", "room")


class HistorySchema(Schema):
    """`get_history` and GET .../messages: {roomId | with, before, after, limit, order}."""

    class Meta:
        unknown = EXCLUDE

    room = RoomName(data_key="roomId")
    with_user = fields.Integer(data_key="with", strict=False, validate=validate.Range(min=1, max=MAX_ID))
    before = fields.Integer(strict=False, validate=validate.Range(min=1, max=2**53))
    after = fields.Integer(strict=False, validate=validate.Range(min=0, max=2**53))
    limit = fields.Integer(strict=False, load_default=50, validate=validate.Range(min=1))
    order = fields.String(load_default="desc", validate=validate.OneOf(("asc", "desc")))

    @pre_load
    def _shape(self, data: Any, **_: Any) -> Any:
        return room_alias(data, "roomId", "room")

    @post_load
    def _within_seq_column(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        # seq is a 32-bit column: a bound past it (Number.MAX_SAFE_INTEGER as "from the newest") is read
        # as the largest seq there can be, never sent to the database as a number it refuses.
        for name in ("before", "after"):
            if data.get(name) is not None and data[name] > MAX_ID:
                data[name] = MAX_ID
        return data


class MarkReadSchema(Schema):
    """`mark_read`: {roomId, seq} for a room, {with, seq} for a direct conversation."""

    class Meta:
        unknown = EXCLUDE

    room = RoomName(data_key="roomId")
    with_user = fields.Integer(data_key="with", strict=False, validate=validate.Range(min=1, max=MAX_ID))
    seq = fields.Integer(strict=True, required=True, validate=validate.Range(min=0, max=2**53))

    @pre_load
    def _shape(self, data: Any, **_: Any) -> Any:
        return room_alias(data, "roomId", "room")

    @validates_schema
    def _target(self, data: dict[str, Any], **_: Any) -> None:
        if ("room" in data) == ("with_user" in data):
            raise ValidationError("Give exactly one of roomId and with.", "roomId")


class RoomCreateSchema(Schema):
    """POST /api/rooms."""

    class Meta:
        unknown = EXCLUDE

    name = RoomName(required=True)
    kind = fields.String(load_default="public", validate=validate.OneOf(("public", "private")))
    topic = fields.String(validate=validate.Length(max=255))


class MemberAddSchema(Schema):
    """POST /api/rooms/<id>/members."""

    class Meta:
        unknown = EXCLUDE

    user_id = fields.Integer(data_key="userId", required=True, strict=False, validate=validate.Range(min=1, max=MAX_ID))
