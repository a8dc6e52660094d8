"""POST /api/admin/broadcast: admins or service keys, validated, recorded, delivered through the facade."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from nexus.models import Broadcast, Notification
from nexus.services import rooms
from nexus.services.rooms import Actor

SERVICE_KEY = "svc-" + "Br0adc4st" * 5


@pytest.fixture
def app(app_factory):
    return app_factory(service_api_keys=(SERVICE_KEY,))


@pytest.fixture
def admin_headers(make_user, token_for):
    return {"Authorization": f"Bearer {token_for(make_user('root', role='admin'))}"}


def records(db) -> list[Broadcast]:
    db.session.rollback()
    return list(db.session.scalars(select(Broadcast).order_by(Broadcast.id)))


def test_non_admins_are_forbidden(client, make_user, token_for, broadcasts):
    headers = {"Authorization": f"Bearer {token_for(make_user('alice'))}"}
    response = client.post("/api/admin/broadcast", json={"kind": "system", "message": "hi"}, headers=headers)
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "FORBIDDEN"
    assert broadcasts.sent == []


@pytest.mark.parametrize(
    ("body", "event", "room"),
    [
        ({"kind": "system", "message": "maintenance at 5"}, "system_message", "all_users"),
        ({"kind": "admin", "message": "deploy done"}, "admin_message", "admins"),
        ({"kind": "department", "department": "sales", "message": "targets"}, "department_message", "department_sales"),
    ],
)
def test_each_kind_goes_to_its_room(client, db, admin_headers, broadcasts, body, event, room):
    response = client.post("/api/admin/broadcast", json=body, headers=admin_headers)
    assert response.status_code == 200, response.get_json()
    [sent] = broadcasts.events(event)
    assert sent["room"] == room
    assert sent["data"]["message"] == body["message"]
    assert sent["data"]["from"]["name"] == "root"
    assert sent["data"]["timestamp"].endswith("Z")
    [row] = records(db)
    answer = response.get_json()
    assert sent["data"]["broadcastId"] == str(row.id)
    assert answer == {"success": True, "kind": body["kind"], "broadcast": sent["data"]}
    stored = {key: value for key, value in sent["data"].items() if key != "broadcastId"}
    assert (row.kind, row.event, row.sender_label, row.payload) == (body["kind"], event, "root", stored)


def test_user_notification(client, db, admin_headers, broadcasts, make_user):
    alice = make_user("alice")
    body = {"kind": "user", "userId": alice.id, "title": "Hello", "message": "hi", "type": "warning"}
    response = client.post("/api/admin/broadcast", json=body, headers=admin_headers)
    assert response.status_code == 200
    [sent] = broadcasts.events("notification")
    assert sent["room"] == f"user_{alice.id}"
    assert (sent["data"]["title"], sent["data"]["type"]) == ("Hello", "warning")
    assert response.get_json()["broadcast"] == sent["data"]
    stored = db.session.get(Notification, int(sent["data"]["id"]))
    assert (stored.user_id, stored.title, stored.read_at) == (alice.id, "Hello", None)
    [row] = records(db)
    assert (row.kind, row.target, row.notification_id) == ("user", str(alice.id), stored.id)


def test_user_notification_title_defaults(client, admin_headers, broadcasts, make_user):
    alice = make_user("alice")
    body = {"kind": "user", "userId": alice.id, "message": "hi"}
    assert client.post("/api/admin/broadcast", json=body, headers=admin_headers).status_code == 200
    [sent] = broadcasts.events("notification")
    assert (sent["data"]["title"], sent["data"]["type"]) == ("Notification", "info")


def test_room_broadcast_reaches_the_room(client, db, admin_headers, broadcasts, make_user):
    owner = make_user("owner")
    rooms.create(Actor(user_id=owner.id, role="user", username="owner"), "standup", "private", None)
    body = {"kind": "room", "room": "standup", "message": "starting now"}
    response = client.post("/api/admin/broadcast", json=body, headers=admin_headers)
    assert response.status_code == 200, response.get_json()
    [sent] = broadcasts.events("system_message")
    assert sent["room"] == "standup"
    assert {key: sent["data"][key] for key in ("type", "room", "message")} == {
        "type": "room", "room": "standup", "message": "starting now"
    }
    assert [(row.kind, row.target) for row in records(db)] == [("room", "standup")]


@pytest.mark.parametrize(
    ("room", "status", "code"), [("nowhere", 404, "ROOM_NOT_FOUND"), ("dm:1:2", 400, "VALIDATION_ERROR")]
)
def test_room_broadcast_to_no_chat_room(client, db, admin_headers, broadcasts, room, status, code):
    response = client.post("/api/admin/broadcast", json={"kind": "room", "room": room, "message": "x"},
                           headers=admin_headers)
    assert response.status_code == status and response.get_json()["error"]["code"] == code
    assert broadcasts.sent == [] and records(db) == []


def test_a_service_key_may_broadcast(client, db, broadcasts):
    response = client.post("/api/admin/broadcast", json={"kind": "system", "message": "deploy at 6"},
                           headers={"X-API-Key": SERVICE_KEY})
    assert response.status_code == 200, response.get_json()
    [sent] = broadcasts.events("system_message")
    assert sent["data"]["from"] == {"id": None, "name": "service:api"}
    [row] = records(db)
    assert (row.sender_user_id, row.sender_label) == (None, "service:api")


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"X-API-Key": "not-the-key-" + "x" * 30}, 401, "INVALID_TOKEN"),
        ({"X-API-Key": ""}, 401, "INVALID_TOKEN"),
        ({}, 401, "UNAUTHORIZED"),
        ({"Authorization": "Bearer not-a-jwt"}, 401, "INVALID_TOKEN"),
    ],
)
def test_refused_credentials(client, db, broadcasts, headers, status, code):
    response = client.post("/api/admin/broadcast", json={"kind": "system", "message": "x"}, headers=headers)
    assert response.status_code == status and response.get_json()["error"]["code"] == code
    assert SERVICE_KEY not in response.get_data(as_text=True)
    assert broadcasts.sent == [] and records(db) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "department", "message": "x"}, "department"),
        ({"kind": "user", "message": "x"}, "userId"),
        ({"kind": "everyone", "message": "x"}, "kind"),
        ({"kind": "system", "message": ""}, "message"),
        ({"kind": "system", "message": "x" * 2001}, "message"),
        ({"kind": "department", "department": "../etc", "message": "x"}, "department"),
        ({"kind": "department", "department": "sales\n", "message": "x"}, "department"),
        ({"kind": "system", "message": "  \n  "}, "message"),
        ({"kind": "system"}, "message"),
        ({"message": "x"}, "kind"),
        ({"kind": "room", "message": "x"}, "room"),
        ({"kind": "room", "room": "bad name!", "message": "x"}, "room"),
        ({"kind": "user", "userId": "abc", "message": "x"}, "userId"),
        ({"kind": "user", "userId": 1, "message": "x", "type": "urgent"}, "type"),
        ({"kind": "user", "userId": 1, "message": "x", "title": "t" * 201}, "title"),
    ],
)
def test_invalid_broadcasts(client, admin_headers, broadcasts, body, field):
    response = client.post("/api/admin/broadcast", json=body, headers=admin_headers)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and field in error["details"]
    assert broadcasts.sent == []


def test_unknown_user(client, admin_headers, broadcasts):
    body = {"kind": "user", "userId": 999, "message": "x"}
    response = client.post("/api/admin/broadcast", json=body, headers=admin_headers)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "USER_NOT_FOUND"
    assert broadcasts.sent == []
