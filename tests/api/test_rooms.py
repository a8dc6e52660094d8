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
