"""/api/notifications: one's own (list, filters, pages, read state) and sending (admins and service keys)."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from nexus.models import Broadcast, Notification
from nexus.services import notifications

SERVICE_KEY = "svc-" + "k3y9Q" * 8
OTHER_KEY = "other-" + "Zx81w" * 8


@pytest.fixture
def app(app_factory):
    return app_factory(service_api_keys=(OTHER_KEY, SERVICE_KEY))


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def root(make_user):
    return make_user("root", role="admin")


def bearer(token_for, user) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(user)}"}


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.get_json()
    body = response.get_json()
    assert body["success"] is False
    return body["error"]


def stored_count(db) -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(Notification))


# --- POST /api/notifications: who may send ---------------------------------------------------------


def test_an_admin_sends_a_notification(client, db, broadcasts, token_for, root, alice):
    body = {"userId": alice.id, "title": "Export", "message": "ready", "type": "success", "data": {"id": 7}}
    response = client.post("/api/notifications", json=body, headers=bearer(token_for, root))
    assert response.status_code == 201, response.get_json()
    sent = response.get_json()["notification"]
    assert response.get_json()["success"] is True
    assert (sent["title"], sent["message"], sent["type"], sent["data"], sent["read"]) == (
        "Export", "ready", "success", {"id": 7}, False
    )
    assert sent["from"] == {"id": str(root.id), "name": "root"}
    [emitted] = broadcasts.events("notification")
    assert emitted["room"] == f"user_{alice.id}" and emitted["data"] == sent
    assert db.session.get(Notification, int(sent["id"])).user_id == alice.id


@pytest.mark.parametrize("key", [SERVICE_KEY, OTHER_KEY])
def test_a_service_sends_with_its_key(client, db, broadcasts, alice, key):
    body = {"userId": alice.id, "title": "Invoice", "message": "paid"}
    response = client.post("/api/notifications", json=body, headers={"X-API-Key": key})
    assert response.status_code == 201, response.get_json()
    sent = response.get_json()["notification"]
    assert sent["from"] == {"id": None, "name": "service:api"} and sent["type"] == "info"
    assert [e["data"] for e in broadcasts.events("notification")] == [sent]
    row = db.session.scalar(select(Broadcast))
    assert (row.sender_user_id, row.sender_label, row.kind) == (None, "service:api", "user")


@pytest.mark.parametrize(
    "key", ["wrong-" + "k" * 40, SERVICE_KEY[:-1], SERVICE_KEY + "x", SERVICE_KEY.upper(), "", "é" * 40]
)
def test_a_wrong_key_is_refused_without_saying_which_keys_exist(client, db, broadcasts, alice, root, token_for, key):
    body = {"userId": alice.id, "title": "t", "message": "m"}
    response = client.post("/api/notifications", json=body, headers={"X-API-Key": key.encode().decode("latin-1")})
    error = error_of(response, 401)
    assert error == {"code": "INVALID_TOKEN", "message": "The API key is not valid."}
    # A wrong key is refused even next to an admin's token: the caller meant to use the key.
    with_token = client.post("/api/notifications", json=body, headers={"X-API-Key": key, **bearer(token_for, root)})
    assert error_of(with_token, 401)["code"] == "INVALID_TOKEN"
    assert broadcasts.sent == [] and stored_count(db) == 0


def test_no_keys_configured_means_no_key_works(app_factory, make_user):
    app = app_factory()
    client = app.test_client()
    with app.app_context():
        alice = make_user("alice")
        response = client.post(
            "/api/notifications", json={"userId": alice.id, "title": "t", "message": "m"},
            headers={"X-API-Key": SERVICE_KEY},
        )
    assert error_of(response, 401)["code"] == "INVALID_TOKEN"


def test_users_and_anonymous_callers_cannot_send(client, db, broadcasts, token_for, alice, bob):
    body = {"userId": bob.id, "title": "t", "message": "m"}
    forbidden = client.post("/api/notifications", json=body, headers=bearer(token_for, alice))
    assert error_of(forbidden, 403)["code"] == "FORBIDDEN"
    anonymous = client.post("/api/notifications", json=body)
    assert error_of(anonymous, 401)["code"] == "UNAUTHORIZED"
    bad_token = client.post("/api/notifications", json=body, headers={"Authorization": "Bearer nonsense"})
    assert error_of(bad_token, 401)["code"] == "INVALID_TOKEN"
    assert broadcasts.sent == [] and stored_count(db) == 0


# --- POST /api/notifications: validation -----------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"userId": None}, "userId"),
        ({"userId": "abc"}, "userId"),
        ({"userId": 0}, "userId"),
        ({"userId": 2**63}, "userId"),
        ({"title": None}, "title"),
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": 5}, "title"),
        ({"message": None}, "message"),
        ({"message": ""}, "message"),
        ({"message": "\u200b\u0000"}, "message"),
        ({"message": "x" * 2001}, "message"),
        ({"type": "urgent"}, "type"),
        ({"type": ""}, "type"),
        ({"data": [1, 2]}, "data"),
        ({"data": "text"}, "data"),
        ({"data": {"blob": "x" * 5000}}, "data"),
    ],
)
def test_invalid_bodies_are_refused(client, db, broadcasts, token_for, root, alice, changes, field):
    body = {"userId": alice.id, "title": "t", "message": "m"} | changes
    body = {key: value for key, value in body.items() if value is not None}
    error = error_of(client.post("/api/notifications", json=body, headers=bearer(token_for, root)), 400)
    assert error["code"] == "VALIDATION_ERROR" and field in error["details"]
    assert broadcasts.sent == [] and stored_count(db) == 0


def test_unknown_user_and_non_json_bodies(client, db, broadcasts, token_for, root):
    headers = bearer(token_for, root)
    unknown = client.post("/api/notifications", json={"userId": 99_999, "title": "t", "message": "m"}, headers=headers)
    assert error_of(unknown, 404) == {"code": "USER_NOT_FOUND", "message": "No such user."}
    as_text = client.post("/api/notifications", data="userId=1", headers=headers)
    assert error_of(as_text, 415)["code"] == "UNSUPPORTED_MEDIA_TYPE"
    as_list = client.post("/api/notifications", json=[1], headers=headers)
    assert error_of(as_list, 400)["code"] == "BAD_REQUEST"
    assert broadcasts.sent == [] and stored_count(db) == 0


# --- GET /api/notifications -------------------------------------------------------------------------


def listed(client, token_for, user, **params) -> dict:
    response = client.get("/api/notifications", query_string=params, headers=bearer(token_for, user))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["success"] is True
    return body


def test_listing_shows_only_ones_own_newest_first(client, db, token_for, alice, bob):
    sent = [notifications.notify(alice.id, f"n{i}", "m") for i in range(3)]
    notifications.notify(bob.id, "bob's", "m")
    body = listed(client, token_for, alice)
    assert body == {"success": True, "notifications": sent[::-1], "hasMore": False, "unreadCount": 3}
    assert [n["title"] for n in listed(client, token_for, bob)["notifications"]] == ["bob's"]


def test_default_page_is_20_and_pages_cover_everything_once(client, db, token_for, alice):
    for i in range(45):
        notifications.notify(alice.id, f"n{i:02d}", "m")
    first = listed(client, token_for, alice)
    assert len(first["notifications"]) == 20 and first["hasMore"] is True
    for unread_only in ("false", "true"):
        seen, before = [], None
        while True:
            params = {"limit": 7, "unread": unread_only} | ({"before": before} if before else {})
            body = listed(client, token_for, alice, **params)
            seen += [n["id"] for n in body["notifications"]]
            if not body["hasMore"]:
                break
            before = body["notifications"][-1]["id"]
        assert len(seen) == len(set(seen)) == 45
        assert [int(i) for i in seen] == sorted((int(i) for i in seen), reverse=True)
    assert len(listed(client, token_for, alice, limit=100)["notifications"]) == 45
    assert listed(client, token_for, alice, limit=1)["notifications"][0]["title"] == "n44"


def test_unread_filter_and_marking_read(client, db, token_for, alice, bob):
    sent = [notifications.notify(alice.id, f"n{i}", "m") for i in range(4)]
    other = notifications.notify(bob.id, "bob's", "m")
    headers = bearer(token_for, alice)
    read = client.post(f"/api/notifications/{sent[1]['id']}/read", headers=headers)
    assert read.status_code == 200
    marked = read.get_json()["notification"]
    assert marked["read"] is True and marked["readAt"].endswith("Z") and marked["id"] == sent[1]["id"]
    again = client.post(f"/api/notifications/{sent[1]['id']}/read", headers=headers).get_json()["notification"]
    assert again == marked
    unread = listed(client, token_for, alice, unread="true")
    assert [n["title"] for n in unread["notifications"]] == ["n3", "n2", "n0"] and unread["unreadCount"] == 3
    everything = listed(client, token_for, alice, unread="false")
    assert [(n["title"], n["read"]) for n in everything["notifications"]] == [
        ("n3", False), ("n2", False), ("n1", True), ("n0", False)
    ]
    # Someone else's notification, or none at all, is not found; nothing changes.
    for path in (f"/api/notifications/{other['id']}/read", "/api/notifications/99999/read"):
        assert error_of(client.post(path, headers=headers), 404)["code"] == "NOT_FOUND"
    assert client.post("/api/notifications/abc/read", headers=headers).status_code == 404
    assert listed(client, token_for, bob, unread="true")["unreadCount"] == 1

    all_read = client.post("/api/notifications/read-all", headers=headers)
    assert all_read.get_json() == {"success": True, "updated": 3}
    assert client.post("/api/notifications/read-all", headers=headers).get_json()["updated"] == 0
    assert listed(client, token_for, alice, unread="true") == {
        "success": True, "notifications": [], "hasMore": False, "unreadCount": 0
    }
    assert listed(client, token_for, bob)["unreadCount"] == 1


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"before": "0"}, "before"),
        ({"before": "x"}, "before"),
        ({"before": str(2**63)}, "before"),
        ({"unread": "maybe"}, "unread"),
    ],
)
def test_query_is_validated(client, token_for, alice, params, field):
    response = client.get("/api/notifications", query_string=params, headers=bearer(token_for, alice))
    error = error_of(response, 400)
    assert error["code"] == "VALIDATION_ERROR" and field in error["details"]


def test_ones_own_routes_need_a_user_token(client, alice):
    for response in (
        client.get("/api/notifications"),
        client.post("/api/notifications/1/read"),
        client.post("/api/notifications/read-all"),
        client.get("/api/notifications", headers={"X-API-Key": SERVICE_KEY}),
    ):
        assert error_of(response, 401)["code"] == "UNAUTHORIZED"
