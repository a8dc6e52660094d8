"""POST /api/auth/login, /refresh, /logout and GET /api/auth/me, with the error contract."""
from __future__ import annotations

import jwt as pyjwt
import pytest

from nexus import create_app
from nexus.extensions import db as _db
from nexus.models import RevokedToken


def login(client, username="alice", password="correct-horse-1"):
    return client.post("/api/auth/login", json={"username": username, "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def alice(make_user):
    return make_user("alice", display_name="Alice A.", department="sales")


def test_login_returns_tokens_and_the_user(client, alice, app):
    response = login(client)
    assert response.status_code == 200
    body = response.get_json()
    assert body["success"] is True
    assert body["tokenType"] == "Bearer"
    assert body["expiresIn"] == app.config["NEXUS"].access_token_ttl_s
    assert body["user"] == {
        "id": str(alice.id),
        "username": "alice",
        "displayName": "Alice A.",
        "role": "user",
        "department": "sales",
        "status": "offline",
        "lastSeen": None,
    }
    claims = pyjwt.decode(body["accessToken"], app.config["JWT_SECRET_KEY"], algorithms=["HS256"])
    assert claims["sub"] == str(alice.id) and claims["userId"] == str(alice.id) and claims["type"] == "access"
    assert client.get("/api/auth/me", headers=bearer(body["accessToken"])).get_json()["user"]["username"] == "alice"


def test_username_is_case_insensitive(client, alice):
    assert login(client, "ALICE").status_code == 200


@pytest.mark.parametrize(("username", "password"), [("alice", "wrong-password"), ("nobody", "correct-horse-1")])
def test_wrong_credentials_are_refused_alike(client, alice, username, password):
    response = login(client, username, password)
    assert response.status_code == 401
    assert response.get_json() == {
        "success": False,
        "error": {"code": "INVALID_CREDENTIALS", "message": "Wrong username or password."},
    }


def test_banned_user_cannot_log_in(client, make_user):
    make_user("mallory", role="banned")
    response = login(client, "mallory")
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "USER_BANNED"


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": "username=alice", "content_type": "application/x-www-form-urlencoded"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ({"data": "{not json", "content_type": "application/json"}, 400, "BAD_REQUEST"),
        ({"json": ["alice"]}, 400, "BAD_REQUEST"),
        ({"json": {"username": "alice"}}, 400, "VALIDATION_ERROR"),
        ({"json": {"username": "alice", "password": 12}}, 400, "VALIDATION_ERROR"),
    ],
)
def test_bad_login_bodies_get_clear_errors(client, alice, kwargs, status, code):
    response = client.post("/api/auth/login", **kwargs)
    assert response.status_code == status
    body = response.get_json()
    assert body["success"] is False and body["error"]["code"] == code
    assert body["error"]["message"]


def test_validation_error_names_the_field(client):
    body = client.post("/api/auth/login", json={"username": "alice"}).get_json()
    assert body["error"]["message"] == "password: Missing data for required field."
    assert body["error"]["details"] == {"password": ["Missing data for required field."]}


def test_refresh_issues_a_new_access_token(client, alice):
    tokens = login(client).get_json()
    response = client.post("/api/auth/refresh", headers=bearer(tokens["refreshToken"]))
    assert response.status_code == 200
    fresh = response.get_json()["accessToken"]
    assert client.get("/api/auth/me", headers=bearer(fresh)).status_code == 200


def test_tokens_of_the_wrong_type_are_refused(client, alice):
    tokens = login(client).get_json()
    # a refresh token is never an access token, and the reverse
    assert client.get("/api/auth/me", headers=bearer(tokens["refreshToken"])).status_code == 401
    assert client.post("/api/auth/refresh", headers=bearer(tokens["accessToken"])).status_code == 401


def test_missing_and_forged_tokens(client, alice, app):
    assert client.get("/api/auth/me").get_json()["error"]["code"] == "UNAUTHORIZED"
    forged = pyjwt.encode({"sub": str(alice.id), "type": "access", "jti": "x"}, "another-key-" + "k" * 32, "HS256")
    assert client.get("/api/auth/me", headers=bearer(forged)).get_json()["error"]["code"] == "INVALID_TOKEN"
    unsigned = pyjwt.encode({"sub": str(alice.id), "type": "access", "jti": "x"}, None, algorithm="none")
    assert client.get("/api/auth/me", headers=bearer(unsigned)).get_json()["error"]["code"] == "INVALID_TOKEN"


def test_logout_revokes_access_and_refresh_tokens(client, alice, app):
    tokens = login(client).get_json()
    response = client.post(
        "/api/auth/logout", headers=bearer(tokens["accessToken"]), json={"refreshToken": tokens["refreshToken"]}
    )
    assert response.get_json() == {"success": True}
    me = client.get("/api/auth/me", headers=bearer(tokens["accessToken"]))
    assert me.status_code == 401 and me.get_json()["error"]["code"] == "TOKEN_REVOKED"
    refreshed = client.post("/api/auth/refresh", headers=bearer(tokens["refreshToken"]))
    assert refreshed.get_json()["error"]["code"] == "TOKEN_REVOKED"
    with app.app_context():
        assert _db.session.query(RevokedToken).count() == 2


def test_revocation_survives_a_restart(app, client, alice):
    tokens = login(client).get_json()
    client.post("/api/auth/logout", headers=bearer(tokens["accessToken"]))
    # A second app on the same database (another instance, or this one restarted) refuses it too.
    restarted = create_app(app.config["NEXUS"])
    response = restarted.test_client().get("/api/auth/me", headers=bearer(tokens["accessToken"]))
    assert response.get_json()["error"]["code"] == "TOKEN_REVOKED"


def test_a_banned_users_existing_token_stops_working(client, alice):
    tokens = login(client).get_json()
    alice.role = "banned"
    _db.session.commit()
    assert client.get("/api/auth/me", headers=bearer(tokens["accessToken"])).get_json()["error"]["code"] == "USER_BANNED"


def test_unknown_routes_and_methods_use_the_error_contract(client):
    assert client.get("/api/nothing").get_json()["error"]["code"] == "NOT_FOUND"
    assert client.get("/api/auth/login").get_json()["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_cors_allows_configured_origins_only(app_factory):
    app = app_factory(cors_origins=("http://localhost:3000",))
    client = app.test_client()
    preflight = client.options(
        "/api/auth/login",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
    evil = client.post("/api/auth/login", json={}, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in evil.headers
