"""Users over REST: profiles, search (literal, paginated, bounded) and PATCH /api/users/me."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select
from werkzeug.security import generate_password_hash

from nexus.models import User
from nexus.realtime import events
from nexus.services import users as users_service


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch):
    """These tests never log in; a one-round hash keeps dozens of accounts per test fast."""
    monkeypatch.setattr(
        users_service, "generate_password_hash", lambda password: generate_password_hash(password, "pbkdf2:sha256:1")
    )


def bearer(token_for, user) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(user)}"}


def stored(db, user_id: int) -> dict:
    """The committed state of an account (anything uncommitted in the session is dropped first)."""
    db.session.rollback()
    return db.session.get(User, user_id).public_dict()


@pytest.fixture
def people(make_user):
    return {
        "alice": make_user("alice", display_name="Alice Liddell", department="sales"),
        "bob": make_user("bob", display_name="Bob the Builder"),
        "under": make_user("under_score"),
        "pure": make_user("pure", display_name="100% Pure"),
        "slash": make_user("slash", display_name="Back\\Slash"),
        "bobby": make_user("bobby", display_name="Robert'); DROP TABLE users;--"),
        "obrien": make_user("obrien", display_name="Conan O'Brien"),
        "mallory": make_user("mallory", display_name="Mallory Banned", role="banned"),
        "root": make_user("root", display_name="Root Admin", role="admin"),
    }


def search(client, token_for, viewer, **params):
    return client.get("/api/users", query_string=params, headers=bearer(token_for, viewer))


def names(response) -> list[str]:
    assert response.status_code == 200, response.get_json()
    return [user["username"] for user in response.get_json()["users"]]


# --- GET /api/users/<id> ---------------------------------------------------------------------


def test_profile_shows_the_public_fields_with_presence(client, db, people, token_for):
    bob = people["bob"]
    bob.status, bob.last_seen_at = "away", datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)
    db.session.commit()
    response = client.get(f"/api/users/{bob.id}", headers=bearer(token_for, people["alice"]))
    assert response.status_code == 200
    body = response.get_json()
    assert body == {"success": True, "user": bob.public_dict()}
    assert body["user"]["status"] == "away" and body["user"]["lastSeen"].startswith("2024-05-01T12:30:00")
    assert "passwordHash" not in body["user"] and "password_hash" not in body["user"]


def test_unknown_user_is_not_found(client, people, token_for):
    for user_id in (99_999, 0):
        response = client.get(f"/api/users/{user_id}", headers=bearer(token_for, people["alice"]))
        assert response.status_code == 404
        error = {"code": "USER_NOT_FOUND", "message": "No such user."}
        assert response.get_json() == {"success": False, "error": error}


def test_banned_users_are_shown_to_admins_only(client, people, token_for):
    mallory = people["mallory"]
    hidden = client.get(f"/api/users/{mallory.id}", headers=bearer(token_for, people["alice"]))
    unknown = client.get("/api/users/99999", headers=bearer(token_for, people["alice"]))
    assert hidden.status_code == 404 and hidden.get_json() == unknown.get_json()
    shown = client.get(f"/api/users/{mallory.id}", headers=bearer(token_for, people["root"]))
    assert shown.status_code == 200 and shown.get_json()["user"]["role"] == "banned"


def test_every_route_needs_a_token(client, people):
    for response in (
        client.get(f"/api/users/{people['bob'].id}"),
        client.get("/api/users?q=bob"),
        client.patch("/api/users/me", json={"displayName": "Nobody"}),
    ):
        assert response.status_code == 401 and response.get_json()["error"]["code"] == "UNAUTHORIZED"


# --- GET /api/users ---------------------------------------------------------------------------


def test_search_by_username_and_display_name_ignores_case(client, people, token_for):
    alice = people["alice"]
    response = search(client, token_for, alice, q="ali")
    assert response.get_json() == {
        "success": True,
        "users": [alice.public_dict()],
        "nextCursor": None,
        "hasMore": False,
        "limit": 20,
    }
    assert names(search(client, token_for, alice, q="ALI")) == ["alice"]
    assert names(search(client, token_for, alice, q="builder")) == ["bob"]
    assert names(search(client, token_for, alice, q="lIdDeLl")) == ["alice"]
    assert names(search(client, token_for, alice, q="bob")) == ["bob", "bobby"]
    assert names(search(client, token_for, alice, q="  bob  ")) == ["bob", "bobby"]
    assert names(search(client, token_for, alice, q="nobody-has-this")) == []


def test_empty_query_lists_everyone_but_banned_users_only_for_admins(client, people, token_for):
    everyone = ["alice", "bob", "bobby", "obrien", "pure", "root", "slash", "under_score"]
    assert names(search(client, token_for, people["alice"])) == everyone
    assert names(search(client, token_for, people["alice"], q="")) == everyone
    assert names(search(client, token_for, people["alice"], q="mallory")) == []
    assert names(search(client, token_for, people["root"], q="mallory")) == ["mallory"]
    assert "mallory" in names(search(client, token_for, people["root"]))


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("%", ["pure"]),
        ("%%", []),
        ("0%", ["pure"]),
        ("a%e", []),
        ("_", ["under_score"]),
        ("r_s", ["under_score"]),
        ("a_i", []),
        ("\\", ["slash"]),
        ("k\\s", ["slash"]),
        ("\\%", []),
        ("\\_", []),
        ("'; DROP TABLE users; --", []),
        ("drop table users", ["bobby"]),
        ("');", ["bobby"]),
        ("o'b", ["obrien"]),
        ('"', []),
        ("1=1 OR 'a'='a", []),
        ("ali\x01ce", ["alice"]),  # control characters are dropped
    ],
)
def test_search_text_is_literal(client, db, people, token_for, q, expected):
    assert names(search(client, token_for, people["alice"], q=q)) == expected
    assert db.session.scalar(select(func.count()).select_from(User)) == len(people)


def test_search_text_with_nul_is_refused_naming_the_parameter(client, people, token_for):
    # NUL, which PostgreSQL cannot hold in text, is refused wherever it is sent.
    refused = search(client, token_for, people["alice"], q="ali\x00")
    assert refused.status_code == 400
    assert refused.get_json()["error"]["code"] == "VALIDATION_ERROR"
    assert list(refused.get_json()["error"]["details"]) == ["q"]


def test_pages_cover_every_match_once_in_username_order(client, make_user, token_for):
    viewer = make_user("viewer")
    members = [make_user(f"member{i:02d}", display_name=f"Member {i}") for i in range(1, 26)]
    make_user("member99", role="banned")
    collected, cursor, pages = [], None, 0
    while True:
        params = {"q": "member", "limit": 10} | ({"cursor": cursor} if cursor else {})
        body = search(client, token_for, viewer, **params).get_json()
        pages += 1
        assert len(body["users"]) <= 10 and body["hasMore"] is (body["nextCursor"] is not None)
        collected += [user["username"] for user in body["users"]]
        cursor = body["nextCursor"]
        if not body["hasMore"]:
            break
    expected = sorted(member.username for member in members)
    assert pages == 3 and collected == expected and len(set(collected)) == 25
    # Without a filter, the viewer takes its place in the same order.
    everyone, body = [], {"nextCursor": None}
    for _ in range(10):
        cursor = {"cursor": body["nextCursor"]} if everyone else {}
        body = search(client, token_for, viewer, limit=7, **cursor).get_json()
        everyone += [user["username"] for user in body["users"]]
        if not body["hasMore"]:
            break
    assert everyone == sorted(expected + ["viewer"])


@pytest.mark.parametrize("limit", ["0", "51", "abc", "-1", "", "2.5"])
def test_limit_is_bounded(client, people, token_for, limit):
    response = search(client, token_for, people["alice"], limit=limit)
    assert response.status_code == 400
    body = response.get_json()
    assert body["success"] is False and body["error"]["code"] == "VALIDATION_ERROR"
    assert "limit" in body["error"]["details"]


def test_limit_edges_and_default(client, make_user, token_for):
    viewer = make_user("viewer")
    for i in range(55):
        make_user(f"extra{i:02d}")
    assert len(names(search(client, token_for, viewer, limit="1"))) == 1
    assert len(names(search(client, token_for, viewer, limit="50"))) == 50
    default = search(client, token_for, viewer).get_json()
    assert len(default["users"]) == 20 and default["limit"] == 20 and default["hasMore"] is True


def test_query_length_and_cursor_are_validated(client, people, token_for):
    alice = people["alice"]
    assert names(search(client, token_for, alice, q="a" * 64)) == []
    too_long = search(client, token_for, alice, q="a" * 65)
    assert too_long.status_code == 400 and too_long.get_json()["error"]["code"] == "VALIDATION_ERROR"
    assert "q" in too_long.get_json()["error"]["details"]
    bad_cursor = search(client, token_for, alice, cursor="' OR 1=1 --")
    assert bad_cursor.status_code == 400 and "cursor" in bad_cursor.get_json()["error"]["details"]


# --- PATCH /api/users/me ----------------------------------------------------------------------


def patch_me(client, token_for, user, **kwargs):
    return client.patch("/api/users/me", headers=bearer(token_for, user), **kwargs)


def test_update_profile_commits_and_announces_the_change(app, client, db, people, token_for, broadcasts):
    alice = people["alice"]
    changes = {"displayName": "  Alice\u0007 \n Cooper  ", "department": "eng"}
    response = patch_me(client, token_for, alice, json=changes)
    assert response.status_code == 200
    body = response.get_json()
    assert body["success"] is True
    assert body["user"] == stored(db, alice.id)
    assert body["user"]["displayName"] == "Alice Cooper" and body["user"]["department"] == "eng"
    expected = {"userId": str(alice.id), "data": {"displayName": "Alice Cooper", "department": "eng"}}
    assert broadcasts.events("user_update") == [
        {
            "event": "user_update",
            "data": expected,
            "room": "all_users",
            "namespace": "/",
            "skip_sid": None,
            "local": False,
        }
    ]
    # Every registered namespace that serves user_update (/presence too) gets one copy of the same event.
    served = set(events.namespaces_for("user_update")) & app.extensions["nexus.broadcaster"].namespaces
    assert sorted(item["namespace"] for item in broadcasts.sent) == sorted(served)
    for item in broadcasts.sent:
        assert (item["event"], item["room"], item["data"]) == ("user_update", "all_users", expected)


def test_department_can_be_cleared_and_unchanged_values_are_not_announced(client, db, people, token_for, broadcasts):
    alice = people["alice"]
    cleared = patch_me(client, token_for, alice, json={"department": None, "displayName": "Alice Liddell"})
    assert cleared.status_code == 200 and cleared.get_json()["user"]["department"] is None
    assert stored(db, alice.id)["department"] is None
    assert [item["data"] for item in broadcasts.events("user_update")] == [
        {"userId": str(alice.id), "data": {"department": None}}
    ]
    again = patch_me(client, token_for, alice, json={"department": None})
    assert again.status_code == 200 and len(broadcasts.events("user_update")) == 1


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"role": "admin"}, "role"),
        ({"displayName": "Queen Alice", "role": "admin"}, "role"),
        ({"username": "root"}, "username"),
        ({"id": 1}, "id"),
        ({"status": "online"}, "status"),
        ({"password": "new-password-1"}, "password"),
        ({"nickname": "Al"}, "nickname"),
        ({"displayName": "Queen Alice", "display_name": "Queen"}, "display_name"),
        ({}, "_schema"),
        ({"displayName": ""}, "displayName"),
        ({"displayName": "   "}, "displayName"),
        ({"displayName": "\u0000\u0001\u200b"}, "displayName"),
        ({"displayName": "x" * 65}, "displayName"),
        ({"displayName": None}, "displayName"),
        ({"displayName": 42}, "displayName"),
        ({"department": "no spaces"}, "department"),
        ({"department": "x" * 65}, "department"),
        ({"department": ""}, "department"),
    ],
)
def test_update_profile_refuses_bad_or_forbidden_fields(client, db, people, token_for, broadcasts, payload, field):
    alice = people["alice"]
    before = stored(db, alice.id)
    response = patch_me(client, token_for, alice, json=payload)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and field in error["details"]
    assert stored(db, alice.id) == before and before["role"] == "user" and before["username"] == "alice"
    assert broadcasts.sent == []


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": "displayName=Eve", "content_type": "text/plain"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ({"data": {"displayName": "Eve"}}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ({"data": "displayName=Eve"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ({"data": "{not json", "content_type": "application/json"}, 400, "BAD_REQUEST"),
        ({"json": ["displayName", "Eve"]}, 400, "BAD_REQUEST"),
    ],
)
def test_update_profile_needs_a_json_object(client, db, people, token_for, broadcasts, kwargs, status, code):
    alice = people["alice"]
    before = stored(db, alice.id)
    response = patch_me(client, token_for, alice, **kwargs)
    assert response.status_code == status and response.get_json()["error"]["code"] == code
    assert stored(db, alice.id) == before and broadcasts.sent == []
