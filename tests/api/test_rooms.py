"""Rooms over REST."""
from __future__ import annotations

from nexus.services import messages, rooms
from nexus.services.rooms import Actor


def bearer(token_for, user):
    return {"Authorization": f"Bearer {token_for(user)}"}


def test_create_list_info_and_members(client, make_user, token_for):
    owner, bob, carol = make_user("owner"), make_user("bob"), make_user("carol")
    created = client.post("/api/rooms", json={"name": "plans", "kind": "private"}, headers=bearer(token_for, owner))
    assert created.status_code == 201 and created.get_json()["room"]["kind"] == "private"
    again = client.post("/api/rooms", json={"name": "plans"}, headers=bearer(token_for, owner))
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "CONFLICT"
    bad = client.post("/api/rooms", json={"name": "user_1"}, headers=bearer(token_for, owner))
    assert bad.status_code == 403

    assert client.get("/api/rooms/plans", headers=bearer(token_for, bob)).status_code == 403
    assert [r["name"] for r in client.get("/api/rooms", headers=bearer(token_for, bob)).get_json()["rooms"]] == []
    added = client.post("/api/rooms/plans/members", json={"userId": bob.id}, headers=bearer(token_for, owner))
    assert added.status_code == 201
    refused = client.post("/api/rooms/plans/members", json={"userId": carol.id}, headers=bearer(token_for, bob))
    assert refused.status_code == 403
    info = client.get("/api/rooms/plans", headers=bearer(token_for, bob)).get_json()["room"]
    assert {m["username"] for m in info["members"]} == {"owner", "bob"} and info["memberCount"] == 2
    by_id = client.get(f"/api/rooms/{info['id']}", headers=bearer(token_for, bob)).get_json()["room"]
    assert by_id["name"] == "plans"
    listed = client.get("/api/rooms", headers=bearer(token_for, bob)).get_json()["rooms"]
    assert [(r["name"], r["member"], r["unread"]) for r in listed] == [("plans", True, 0)]
    assert client.delete(f"/api/rooms/plans/members/{bob.id}", headers=bearer(token_for, owner)).status_code == 200
    assert client.get("/api/rooms/plans", headers=bearer(token_for, bob)).status_code == 403


def test_history_over_rest_and_unread(client, db, make_user, token_for):
    alice, bob = make_user("alice"), make_user("bob")
    a = Actor(user_id=alice.id, role="user", username="alice", display_name="alice")
    b = Actor(user_id=bob.id, role="user", username="bob", display_name="bob")
    rooms.join(a, "general", auto_create=True, guests_can_chat=False)
    rooms.join(b, "general", auto_create=True, guests_can_chat=False)
    for i in range(5):
        messages.send_to_room(a, "general", {"content": f"m{i}", "type": "text"})
    messages.send_direct(a, bob.id, {"content": "dm", "type": "text"}, sender_sid=None)
    page = client.get("/api/rooms/general/messages?limit=2", headers=bearer(token_for, bob)).get_json()
    assert [m["seq"] for m in page["messages"]] == [5, 4] and page["hasMore"] is True
    dms = client.get(f"/api/conversations/{alice.id}/messages", headers=bearer(token_for, bob)).get_json()
    assert [m["content"] for m in dms["messages"]] == ["dm"]
    listed = client.get("/api/rooms", headers=bearer(token_for, bob)).get_json()["rooms"]
    assert [(r["name"], r["unread"]) for r in listed] == [("general", 5)]
    bad = client.get("/api/rooms/general/messages?limit=-1", headers=bearer(token_for, bob))
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "VALIDATION_ERROR"
    assert client.get("/api/rooms/nowhere", headers=bearer(token_for, bob)).get_json()["error"]["code"] == "ROOM_NOT_FOUND"
    assert client.get("/api/rooms").status_code == 401


# -- taking a member out of a room --------------------------------------------------------------


def received(test_client, name, namespace="/"):
    return [item["args"][0] for item in test_client.get_received(namespace) if item["name"] == name]


def drain(test_client, namespace="/"):
    """What a test client received, connected or not (get_received refuses once disconnected)."""
    events = [item for item in test_client.queue if item["namespace"] == namespace]
    test_client.queue = [item for item in test_client.queue if item["namespace"] != namespace]
    return events


def _private_room_with(client, token_for, owner, member, name="plans"):
    client.post("/api/rooms", json={"name": name, "kind": "private"}, headers=bearer(token_for, owner))
    assert client.post(f"/api/rooms/{name}/members", json={"userId": member.id},
                       headers=bearer(token_for, owner)).status_code == 201


def test_a_removed_member_is_taken_out_of_the_room_on_every_socket(app, client, make_user, token_for, socket_client):
    owner, bob = make_user("owner"), make_user("bob")
    _private_room_with(client, token_for, owner, bob)
    owner_socket = socket_client(token=token_for(owner))
    on_default = socket_client(token=token_for(bob))
    on_chat = socket_client(token=token_for(bob), namespace="/chat")
    assert owner_socket.emit("join_room", "plans", callback=True)["success"]
    assert on_default.emit("join_room", "plans", callback=True)["success"]
    assert on_chat.emit("join_room", "plans", callback=True, namespace="/chat")["success"]
    assert on_default.emit("typing_start", "plans", callback=True)["success"]
    first = owner_socket.emit("send_message", {"roomId": "plans", "content": "before"}, callback=True)["message"]
    for test_client, namespace in ((owner_socket, "/"), (on_default, "/"), (on_chat, "/chat")):
        test_client.get_received(namespace)

    answer = client.delete(f"/api/rooms/plans/members/{bob.id}", headers=bearer(token_for, owner))
    assert answer.status_code == 200 and answer.get_json()["lastSeq"] == first["seq"]

    for test_client, namespace in ((on_default, "/"), (on_chat, "/chat")):
        assert received(test_client, "removed_from_room", namespace) == [
            {"roomId": "plans", "room": "plans", "reason": "removed", "lastSeq": first["seq"]}
        ]
    # The others see bob stop typing and leave.
    events = owner_socket.get_received()
    typing = [e["args"][0] for e in events if e["name"] == "user_typing"]
    assert [(t["userId"], t["isTyping"]) for t in typing] == [(str(bob.id), False)]
    assert [e["args"][0]["user"]["username"] for e in events if e["name"] == "room_left"] == ["bob"]
    assert not app.extensions["nexus.chat"].typing.is_typing(
        type("A", (), {"member_key": f"u:{bob.id}"})(), "plans"
    )
    after = owner_socket.emit("send_message", {"roomId": "plans", "content": "after"}, callback=True)["message"]
    assert [m["seq"] for m in received(owner_socket, "room_message")] == [after["seq"]]
    assert received(on_default, "room_message") == [] and received(on_chat, "room_message", "/chat") == []

    # No way back in, nor to its history, over sockets or REST.
    assert on_default.emit("join_room", "plans", callback=True)["error"]["code"] == "FORBIDDEN"
    assert on_chat.emit("join_room", {"room": "plans", "since": 0}, callback=True,
                        namespace="/chat")["error"]["code"] == "FORBIDDEN"
    assert on_default.emit("get_history", {"roomId": "plans"}, callback=True)["error"]["code"] == "FORBIDDEN"
    assert on_default.emit("typing_start", "plans", callback=True)["error"]["code"] == "NOT_IN_ROOM"
    assert client.get("/api/rooms/plans/messages", headers=bearer(token_for, bob)).status_code == 403
    late = socket_client(token=token_for(bob), auth={"token": token_for(bob), "since": {"plans": 0}})
    assert received(late, "room_message") == []
    assert on_default.emit("leave_room", "plans", callback=True)["error"]["code"] == "NOT_FOUND"

    # Added back, bob joins at once (the revocation mark is lifted).
    client.post("/api/rooms/plans/members", json={"userId": bob.id}, headers=bearer(token_for, owner))
    assert on_default.emit("join_room", "plans", callback=True)["success"]


def test_removing_from_a_room_nobody_is_connected_to(client, make_user, token_for):
    owner, bob = make_user("owner"), make_user("bob")
    _private_room_with(client, token_for, owner, bob)
    answer = client.delete(f"/api/rooms/plans/members/{bob.id}", headers=bearer(token_for, owner))
    assert answer.get_json() == {"success": True, "userId": str(bob.id), "lastSeq": 0}
    again = client.delete(f"/api/rooms/plans/members/{bob.id}", headers=bearer(token_for, owner))
    assert again.status_code == 404
    assert client.delete(f"/api/rooms/plans/members/{owner.id}", headers=bearer(token_for, owner)).status_code == 409


def test_a_ban_takes_the_user_out_of_every_room_before_disconnecting(app, client, make_user, token_for, socket_client):
    owner, bob, root = make_user("owner"), make_user("bob"), make_user("root", role="admin")
    _private_room_with(client, token_for, owner, bob)
    owner_socket = socket_client(token=token_for(owner))
    bob_socket = socket_client(token=token_for(bob))
    admin = socket_client(token=token_for(root), namespace="/admin")
    for room in ("plans", "lobby"):
        assert owner_socket.emit("join_room", room, callback=True)["success"]
        assert bob_socket.emit("join_room", room, callback=True)["success"]
    bob_socket.get_received()

    assert admin.emit("ban_user", {"userId": bob.id}, callback=True, namespace="/admin")["success"]
    events = drain(bob_socket)
    names = [e["name"] for e in events]
    removed = [e["args"][0] for e in events if e["name"] == "removed_from_room"]
    assert sorted((r["roomId"], r["reason"]) for r in removed) == [("lobby", "banned"), ("plans", "banned")]
    assert names.index("session_revoked") > max(i for i, n in enumerate(names) if n == "removed_from_room")
    assert not bob_socket.is_connected()
    owner_socket.get_received()
    owner_socket.emit("send_message", {"roomId": "plans", "content": "after the ban"}, callback=True)
    assert "room_message" not in [e["name"] for e in drain(bob_socket)]


def test_an_administrator_demoted_leaves_the_private_rooms_they_are_not_a_member_of(
    app, client, make_user, token_for, socket_client
):
    owner, root, boss = make_user("owner"), make_user("root", role="admin"), make_user("boss", role="admin")
    client.post("/api/rooms", json={"name": "plans", "kind": "private"}, headers=bearer(token_for, owner))
    client.post("/api/rooms", json={"name": "council", "kind": "private"}, headers=bearer(token_for, owner))
    client.post("/api/rooms/council/members", json={"userId": root.id}, headers=bearer(token_for, owner))
    root_socket = socket_client(token=token_for(root))
    for room in ("plans", "council", "lobby"):
        assert root_socket.emit("join_room", room, callback=True)["success"], room
    root_socket.get_received()
    admin = socket_client(token=token_for(boss), namespace="/admin")

    assert admin.emit("set_role", {"userId": root.id, "role": "user"}, callback=True, namespace="/admin")["success"]
    events = drain(root_socket)
    removed = [e["args"][0] for e in events if e["name"] == "removed_from_room"]
    assert [(r["roomId"], r["reason"]) for r in removed] == [("plans", "role_changed")]
    again = socket_client(token=token_for(root))
    assert again.emit("join_room", "plans", callback=True)["error"]["code"] == "FORBIDDEN"
    assert again.emit("join_room", "council", callback=True)["success"]


def test_a_removal_that_cannot_be_carried_out_everywhere_answers_503(app, client, make_user, token_for, monkeypatch):
    from nexus.errors import NexusError

    owner, bob = make_user("owner"), make_user("bob")
    _private_room_with(client, token_for, owner, bob)

    def stalled(*args, **kwargs):
        raise NexusError("UNAVAILABLE", "Another server did not confirm the change.", retry_after_ms=3000)

    monkeypatch.setattr(app.extensions["nexus.control"], "revoke", stalled)
    answer = client.delete(f"/api/rooms/plans/members/{bob.id}", headers=bearer(token_for, owner))
    assert answer.status_code == 503 and int(answer.headers["Retry-After"]) >= 1
    assert answer.get_json()["error"]["code"] == "UNAVAILABLE"
    info = client.get("/api/rooms/plans", headers=bearer(token_for, bob))
    assert info.status_code == 200  # still a member
