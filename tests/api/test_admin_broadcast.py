"""POST /api/admin/broadcast: admins only, validated, delivered through the facade."""
from __future__ import annotations

import pytest


@pytest.fixture
def admin_headers(make_user, token_for):
    return {"Authorization": f"Bearer {token_for(make_user('root', role='admin'))}"}


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
def test_each_kind_goes_to_its_room(client, admin_headers, broadcasts, body, event, room):
    response = client.post("/api/admin/broadcast", json=body, headers=admin_headers)
    assert response.status_code == 200, response.get_json()
    [sent] = broadcasts.events(event)
    assert sent["room"] == room
    assert sent["data"]["message"] == body["message"]
    assert sent["data"]["from"]["username"] == "root"
    assert sent["data"]["timestamp"].endswith("Z")


def test_user_notification(client, admin_headers, broadcasts, make_user):
    alice = make_user("alice")
    body = {"kind": "user", "userId": alice.id, "title": "Hello", "message": "hi", "type": "warning"}
    assert client.post("/api/admin/broadcast", json=body, headers=admin_headers).status_code == 200
    [sent] = broadcasts.events("notification")
    assert sent["room"] == f"user_{alice.id}"
    assert (sent["data"]["title"], sent["data"]["type"]) == ("Hello", "warning")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "department", "message": "x"}, "department"),
        ({"kind": "user", "message": "x"}, "userId"),
        ({"kind": "everyone", "message": "x"}, "kind"),
        ({"kind": "system", "message": ""}, "message"),
        ({"kind": "system", "message": "x" * 2001}, "message"),
        ({"kind": "department", "department": "../etc", "message": "x"}, "department"),
    ],
)
def test_invalid_broadcasts(client, admin_headers, broadcasts, body, field):
    response = client.post("/api/admin/broadcast", json=body, headers=admin_headers)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and field in error["details"]
    assert broadcasts.sent == []


def test_unknown_user(client, admin_headers):
    response = client.post("/api/admin/broadcast", json={"kind": "user", "userId": 999, "message": "x"}, headers=admin_headers)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "USER_NOT_FOUND"
