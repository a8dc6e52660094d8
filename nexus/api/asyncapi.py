"""`GET /api/asyncapi.json`: the Socket.IO events as an AsyncAPI 3.0 document, made from the event catalogue."""
from __future__ import annotations

import copy
import functools
from importlib import metadata
from typing import Any

from flask import Blueprint, jsonify, request

from nexus.api.openapi import describe
from nexus.errors import CATALOGUE as ERROR_CATALOGUE
from nexus.realtime import catalogue
from nexus.realtime.catalogue import ClientEvent, NamespaceEvents, ServerEvent, ref

bp = Blueprint("asyncapi", __name__)

CONNECTING = (
    "Socket.IO 4 (Engine.IO 4, WebSocket or long-polling) at `/socket.io/`. Connect with the access token in "
    "`auth` (`io(url, {auth: {token}})`) or as `?token=`; with no token the socket is a guest's (where "
    "allowed). `auth.since` (`{room: lastSeq}`) rejoins those rooms and replays what was missed. A refused "
    "connection's `connect_error` carries `err.data = {code, message}`. Every event a client sends is "
    "answered through its ack: `{success: true, ...}` or `{success: false, error: {code, message}}`; an "
    "event sent without an ack that is refused produces an `error` event instead."
)


@bp.get("/asyncapi.json")
@describe(
    "The Socket.IO events",
    auth=None,
    responses={200: ("The AsyncAPI 3.0 document.", {"application/json": {"schema": {"type": "object"}}})},
)
def asyncapi_json():
    """The AsyncAPI 3.0 description of every Socket.IO namespace's events, for a server at this host."""
    scheme = "wss" if request.scheme == "https" else "ws"
    return jsonify(document(host=request.host, protocol=scheme))


def document(*, host: str = "localhost:5000", protocol: str = "ws") -> dict[str, Any]:
    """The AsyncAPI document, for a server at `host` (a copy: callers may change it)."""
    built = copy.deepcopy(_document())
    built["servers"]["nexus"].update(host=host, protocol=protocol)
    return built


@functools.lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    described = catalogue.described()
    schemas: dict[str, Any] = {**described.components, "Error": _error_schema()}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for namespace in catalogue.NAMESPACES.values():
        key = catalogue.short_name(namespace.name)
        channel_messages: dict[str, Any] = {}
        for event in namespace.receives:
            for suffix, message in _client_messages(event, described).items():
                messages.setdefault(suffix, message)
                channel_messages[suffix] = {"$ref": f"#/components/messages/{suffix}"}
            operations[f"{key}.{event.name}"] = _receive(key, event)
        for server_event in namespace.sends:
            messages.setdefault(server_event.name, _server_message(server_event, described))
            channel_messages[server_event.name] = {"$ref": f"#/components/messages/{server_event.name}"}
            operations[f"{key}.{server_event.name}"] = _send(key, server_event)
        channels[key] = _channel(namespace, channel_messages)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Nexus Socket.IO events",
            "version": _version(),
            "description": "The events of each Socket.IO namespace: what clients send, the acks they get, and "
            "what the server sends and to whom.\n\n" + CONNECTING,
        },
        "defaultContentType": "application/json",
        "servers": {
            "nexus": {
                "host": "localhost:5000",
                "protocol": "ws",
                "pathname": "/socket.io/",
                "description": "Socket.IO 4 over Engine.IO 4 (`EIO=4`); WebSocket, or HTTP long-polling.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def _channel(namespace: NamespaceEvents, messages: dict[str, Any]) -> dict[str, Any]:
    return {
        "address": namespace.name,
        "title": f"namespace {namespace.name}",
        "description": namespace.summary,
        "servers": [{"$ref": "#/servers/nexus"}],
        "messages": messages,
    }


def _client_messages(event: ClientEvent, described: catalogue.Described) -> dict[str, Any]:
    """The event, its success ack and its refusal ack, as messages keyed `name`, `name.ack`, `name.refused`."""
    request_message: dict[str, Any] = {"name": event.name, "title": event.name, "summary": event.summary}
    payload = described.payloads[event.name]
    if payload is None:
        request_message["description"] = "Sent with the ack callback alone: `socket.emit(event, ack)`."
    else:
        request_message["payload"] = payload
        if event.payload is not None and event.payload.optional:
            request_message["description"] = "The payload may be left out: `socket.emit(event, ack)`."
    if event.ack_optional:
        leave_out = "The ack may be left out: a refusal then comes as an `error` event."
        request_message["description"] = " ".join(filter(None, (request_message.get("description"), leave_out)))
    if event.example is not None:
        request_message["examples"] = [{"name": "example", "payload": event.example}]
    success = described.acks[event.name]
    refused = {
        "type": "object",
        "properties": {
            "success": {"const": False},
            "error": {"allOf": [ref("Error"), {"properties": {"code": {"enum": list(event.error_codes)}}}]},
        },
        "required": ["success", "error"],
    }
    return {
        event.name: {**request_message, "x-rate-cost": event.cost},
        f"{event.name}.ack": {"name": f"{event.name} ack", "title": f"{event.name}: done", "payload": success},
        f"{event.name}.refused": {
            "name": f"{event.name} refusal",
            "title": f"{event.name}: refused",
            "summary": "Refused: " + ", ".join(event.error_codes) + ".",
            "payload": refused,
            "x-error-codes": list(event.error_codes),
        },
    }


def _server_message(event: ServerEvent, described: catalogue.Described) -> dict[str, Any]:
    return {
        "name": event.name,
        "title": event.name,
        "summary": event.summary,
        "payload": described.server_payloads[event.name],
        "x-rooms": list(event.rooms),
    }


def _receive(channel: str, event: ClientEvent) -> dict[str, Any]:
    here = {"$ref": f"#/channels/{channel}"}
    return {
        "action": "receive",
        "channel": here,
        "summary": event.summary,
        "messages": [{"$ref": f"#/channels/{channel}/messages/{event.name}"}],
        "reply": {
            "channel": here,
            "messages": [
                {"$ref": f"#/channels/{channel}/messages/{event.name}.ack"},
                {"$ref": f"#/channels/{channel}/messages/{event.name}.refused"},
            ],
        },
    }


def _send(channel: str, event: ServerEvent) -> dict[str, Any]:
    return {
        "action": "send",
        "channel": {"$ref": f"#/channels/{channel}"},
        "summary": event.summary,
        "description": "Received by: " + "; ".join(event.rooms) + ".",
        "messages": [{"$ref": f"#/channels/{channel}/messages/{event.name}"}],
    }


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "A refusal: a stable code (nexus.errors), a message safe to show, optional details.",
        "properties": {
            "code": {"type": "string", "enum": list(ERROR_CATALOGUE)},
            "message": {"type": "string"},
            "details": {},
            "retryAfterMs": {"type": "integer", "minimum": 0, "description": "when to retry (RATE_LIMITED, "
                             "UNAVAILABLE)"},
        },
        "required": ["code", "message"],
    }


def _version() -> str:
    try:
        return metadata.version("nexus")
    except metadata.PackageNotFoundError:
        return "0.0.0"
