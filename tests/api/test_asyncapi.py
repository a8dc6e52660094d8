"""GET /api/asyncapi.json: the AsyncAPI 3.0 document of the Socket.IO events, made from the event catalogue.

The AsyncAPI parser (npm `@asyncapi/parser`) must accept the document a live server serves, and what a
live server really sends (events and acks, on every namespace) must be what the document describes.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from typing import Any

import jsonschema
import pytest
import requests
import socketio
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from nexus.realtime import catalogue
from tests.support import services

PARSER = services.ROOT / "tests" / "js" / "asyncapi.mjs"
NAMESPACES = list(catalogue.NAMESPACES)
#: Server events the scenario below cannot bring about without breaking the server on purpose:
#: a database read failing in the middle of live delivery, and a rate limit (the live server's is lifted).
NOT_PROVOKED = {"messages_missed", "rate_limit_exceeded"}


# -- the document, in process ----------------------------------------------------------------------


def test_the_document_lists_every_namespace_and_event(client):
    response = client.get("/api/asyncapi.json", base_url="https://nexus.example:8443")
    assert response.status_code == 200 and response.is_json
    document = response.get_json()
    assert document["asyncapi"] == "3.0.0"
    assert document["servers"]["nexus"]["host"] == "nexus.example:8443"
    assert document["servers"]["nexus"]["protocol"] == "wss"
    assert {channel["address"] for channel in document["channels"].values()} == set(NAMESPACES)
    for name, namespace in catalogue.NAMESPACES.items():
        key = catalogue.short_name(name)
        received = {op.split(".", 1)[1] for op, spec in document["operations"].items()
                    if op.startswith(key + ".") and spec["action"] == "receive"}
        sent = {op.split(".", 1)[1] for op, spec in document["operations"].items()
                if op.startswith(key + ".") and spec["action"] == "send"}
        assert received == {event.name for event in namespace.receives}
        assert sent == {event.name for event in namespace.sends}


def test_each_client_event_has_its_acks_and_refusal_codes(client):
    document = client.get("/api/asyncapi.json").get_json()
    join = document["operations"]["chat.join_room"]
    assert [message["$ref"] for message in join["reply"]["messages"]] == [
        "#/channels/chat/messages/join_room.ack", "#/channels/chat/messages/join_room.refused"]
    refused = document["components"]["messages"]["join_room.refused"]
    codes = refused["payload"]["properties"]["error"]["allOf"][1]["properties"]["code"]["enum"]
    assert {"FORBIDDEN", "ROOM_NOT_FOUND", "LIMIT_REACHED", "VALIDATION_ERROR", "RATE_LIMITED"} <= set(codes)
    assert document["components"]["messages"]["join_room"]["x-rate-cost"] == 2
    assert document["components"]["messages"]["room_message"]["x-rooms"] == [catalogue.ROOM]
    messages = document["components"]["messages"]
    assert "ack may be left out" in messages["update_status"]["description"]
    assert "ack may be left out" not in messages["join_room"].get("description", "")


# -- a live server ------------------------------------------------------------------------------


@pytest.fixture
def server(live_server):
    """A live server with an admin (root) and three users; alice is in the sales department."""
    url, seeder = live_server.database()
    for name, role, department in [("root", "admin", "ops"), ("alice", "user", "sales"), ("bob", "user", None),
                                   ("carl", "user", None)]:
        seeder.user(name, role=role, department=department)
    started = live_server.start(url)
    started.seeder = seeder
    return started


@pytest.mark.live
@pytest.mark.node
def test_the_asyncapi_parser_accepts_the_served_document(server):
    services.require("node")
    result = subprocess.run([shutil.which("node"), str(PARSER), f"{server.url}/api/asyncapi.json"],
                            cwd=services.ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["errors"] == []
    assert sorted(report["channels"]) == sorted(NAMESPACES)
    assert report["operations"] == sum(len(ns.receives) + len(ns.sends) for ns in catalogue.NAMESPACES.values())


class Recorder:
    """A python-socketio client on some namespaces that keeps every event and every ack it gets."""

    def __init__(self, url: str, token: str, namespaces: list[str]):
        self.sio = socketio.Client(reconnection=False)
        self.events: list[tuple[str, str, Any]] = []
        self.acks: list[tuple[str, str, Any]] = []
        self.lock = threading.Lock()
        for namespace in namespaces:
            self.sio.on("*", self._recorder(namespace), namespace=namespace)
        self.sio.connect(url, auth={"token": token}, namespaces=namespaces, transports=["websocket"],
                         wait_timeout=10)

    def _recorder(self, namespace: str):
        def record(event: str, *args: Any) -> None:
            with self.lock:
                self.events.append((namespace, event, args[0] if len(args) == 1 else list(args)))
        return record

    def call(self, event: str, *args: Any, namespace: str = "/") -> Any:
        ack = self.sio.call(event, args if len(args) > 1 else (args[0] if args else None), namespace=namespace,
                            timeout=10)
        self.acks.append((namespace, event, ack))
        return ack

    def wait_for(self, namespace: str, event: str, match=lambda data: True, timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for ns, name, data in self.events:
                    if ns == namespace and name == event and match(data):
                        return data
            time.sleep(0.02)
        raise AssertionError(f"no {event} on {namespace} within {timeout} s: {[e[:2] for e in self.events]}")


class Document:
    """Validates payloads against the messages of an AsyncAPI document."""

    def __init__(self, document: dict[str, Any]):
        self.messages = document["components"]["messages"]
        resource = Resource.from_contents(document, default_specification=DRAFT7)
        self.registry = Registry().with_resource("urn:asyncapi", resource)

    def check(self, message: str, payload: Any) -> None:
        schema = _rooted(self.messages[message]["payload"])
        errors = sorted(jsonschema.Draft7Validator(schema, registry=self.registry).iter_errors(payload), key=str)
        assert not errors, f"{message}: {errors[0].message} at {list(errors[0].absolute_path)} in {payload!r}"


def _rooted(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {key: ("urn:asyncapi" + value if key == "$ref" and value.startswith("#") else _rooted(value))
                for key, value in schema.items()}
    if isinstance(schema, list):
        return [_rooted(item) for item in schema]
    return schema


@pytest.mark.live
def test_what_a_live_server_sends_is_what_the_document_describes(server):
    seeder = server.seeder
    ids = {name: seeder.user(name)["id"] for name in ("root", "alice", "bob", "carl")}
    tokens = {name: seeder.token(name) for name in ids}
    document = Document(requests.get(f"{server.url}/api/asyncapi.json", timeout=10).json())

    bob = Recorder(server.url, tokens["bob"], ["/", "/chat", "/presence"])
    alice = Recorder(server.url, tokens["alice"], ["/"])
    root = Recorder(server.url, tokens["root"], ["/", "/admin"])
    carl = Recorder(server.url, tokens["carl"], ["/"])
    everyone = [bob, alice, root, carl]
    root.wait_for("/admin", "stats")
    bob.wait_for("/presence", "online_users")

    # Chat, on / and on /chat.
    alice.call("ping")
    alice.call("ping", {"timestamp": 5})
    alice.wait_for("/", "pong", lambda data: data.get("clientTimestamp") == 5)
    assert root.call("join_room", "general")["success"]  # its owner: the owner cannot be removed
    assert bob.call("join_room", "general", namespace="/chat")["success"]
    assert alice.call("join_room", {"room": "general", "since": 0})["success"]
    bob.wait_for("/chat", "room_joined")
    sent = alice.call("send_message", {"roomId": "general", "content": "hi", "clientMsgId": "m-1"})
    message_id = sent["messageId"]
    bob.wait_for("/chat", "room_message")
    alice.call("edit_message", {"messageId": message_id, "content": "hi!"})
    alice.call("typing_start", "general")
    alice.call("typing_stop", {"roomId": "general"})
    bob.wait_for("/chat", "user_typing", lambda data: data["isTyping"] is False)
    alice.call("delete_message", message_id)
    bob.wait_for("/chat", "message_deleted")
    alice.call("get_history", {"roomId": "general"})
    alice.call("room_info", "general")
    alice.call("mark_read", {"roomId": "general", "seq": 1})
    bob.call("send_message", {"roomId": "general", "content": "from /chat"}, namespace="/chat")
    assert alice.call("send_message", {"to": ids["bob"], "content": "psst"})["success"]
    bob.wait_for("/", "new_message")
    alice.call("get_history", {"with": ids["bob"]})
    alice.call("mark_read", {"with": ids["bob"], "seq": 1})

    # Presence, on / and on /presence.
    alice.call("update_status", "busy")
    bob.wait_for("/presence", "user_updated", lambda data: data["status"] == "busy")
    alice.call("update_status", {"status": "offline"})
    bob.wait_for("/presence", "user_offline")
    alice.call("update_status", "online")
    bob.wait_for("/presence", "user_online")
    bob.call("get_online_users", namespace="/presence")
    alice.call("get_online_users")
    alice.call("user_action", {"action": "opened_settings", "data": {"tab": "profile"}})
    alice.call("authenticate", tokens["alice"])
    patched = requests.patch(f"{server.url}/api/users/me", json={"displayName": "Alice A"},
                             headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=10)
    assert patched.status_code == 200, patched.text
    bob.wait_for("/presence", "user_update")

    # Administration, on /admin.
    notified = root.call("broadcast", {"kind": "user", "userId": ids["alice"], "title": "Hi", "message": "hello"},
                         namespace="/admin")
    assert notified["success"], notified
    notification = alice.wait_for("/", "notification")
    alice.call("notification_read", {"id": int(notification["id"])})
    for body in ({"kind": "system", "message": "to all"}, {"kind": "admin", "message": "to admins"},
                 {"kind": "department", "department": "sales", "message": "to sales"},
                 {"kind": "room", "room": "general", "message": "to general"}):
        assert root.call("broadcast", body, namespace="/admin")["success"]
    alice.wait_for("/", "department_message")
    root.wait_for("/", "admin_message")
    bob.wait_for("/chat", "system_message", lambda data: data["type"] == "room")
    root.call("get_stats", namespace="/admin")
    root.call("set_role", {"userId": ids["bob"], "role": "moderator"}, namespace="/admin")

    # Refusals: in the ack, and as an `error` event when no ack was asked for.
    assert alice.call("join_room", "-not-a-room")["success"] is False
    assert root.call("set_role", {"userId": ids["root"], "role": "user"}, namespace="/admin")["success"] is False
    alice.sio.emit("leave_room", "nowhere")
    alice.wait_for("/", "error")

    # Leaving, being removed, being disconnected and banned.
    alice.call("leave_room", "general")
    bob.wait_for("/chat", "room_left")
    removed = requests.delete(f"{server.url}/api/rooms/general/members/{ids['bob']}",
                              headers={"Authorization": f"Bearer {tokens['root']}"}, timeout=10)
    assert removed.status_code == 200, removed.text
    bob.wait_for("/chat", "removed_from_room")
    root.call("disconnect_user", {"userId": ids["bob"]}, namespace="/admin")
    bob.wait_for("/", "session_revoked")
    root.call("ban_user", ids["carl"], namespace="/admin")
    carl.wait_for("/", "session_revoked")
    alice.wait_for("/", "user_offline", lambda data: data["userId"] == str(ids["carl"]))

    # Stopping the server: every socket still open hears of it.
    server.stop(signal.SIGTERM)
    alice.wait_for("/", "server_shutdown")
    for recorder in everyone:
        recorder.sio.disconnect()

    exercised = {event for recorder in everyone for _, event, _ in recorder.acks}
    assert exercised == {event.name for event in catalogue.client_events()}
    for recorder in everyone:
        for namespace, event, ack in recorder.acks:
            assert event in {e.name for e in catalogue.NAMESPACES[namespace].receives}
            document.check(f"{event}.ack" if ack.get("success") else f"{event}.refused", ack)
    seen = set()
    for recorder in everyone:
        for namespace, event, payload in recorder.events:
            assert event in {e.name for e in catalogue.NAMESPACES[namespace].sends}, (namespace, event)
            document.check(event, payload)
            seen.add(event)
    assert seen == {event.name for event in catalogue.SERVER_EVENTS} - NOT_PROVOKED
