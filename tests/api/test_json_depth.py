"""Request bodies nested too deeply: 400 VALIDATION_ERROR on every JSON endpoint, never a 500."""
from __future__ import annotations

import json
import logging

import pytest

from nexus.api.jsonbody import MAX_JSON_DEPTH, BoundedJSONProvider, nesting_exceeds

ENDPOINTS = [
    ("post", "/api/auth/login"),
    ("post", "/api/auth/logout"),
    ("post", "/api/rooms"),
    ("post", "/api/rooms/general/members"),
    ("patch", "/api/users/me"),
    ("post", "/api/notifications"),
    ("post", "/api/admin/broadcast"),
]


def nested(depth: int, *, inner: str = "[]") -> str:
    """An object whose `data` member holds `depth - 1` levels of arrays (the object is one level)."""
    return '{"data":' + "[" * (depth - 2) + inner + "]" * (depth - 2) + "}"


@pytest.fixture
def admin_headers(make_user, token_for) -> dict[str, str]:
    admin = make_user("root", role="admin")
    return {"Authorization": f"Bearer {token_for(admin)}", "Content-Type": "application/json"}


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5_000, 200_000])
def test_deep_bodies_are_refused_on_every_json_endpoint(client, admin_headers, caplog, method, path, depth):
    caplog.set_level(logging.INFO)
    response = getattr(client, method)(path, data=nested(depth), headers=admin_headers)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["message"] == f"The JSON body is nested too deeply (at most {MAX_JSON_DEPTH} levels)."
    assert error["details"] == {"maxDepth": MAX_JSON_DEPTH}
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_a_body_at_the_bound_is_decoded(client, make_user):
    # Exactly MAX_JSON_DEPTH levels pass the bound; the login schema then judges the fields.
    response = client.post("/api/auth/login", data=nested(MAX_JSON_DEPTH),
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "VALIDATION_ERROR"
    assert "nested too deeply" not in response.get_json()["error"]["message"]
    make_user("alice")
    ok = client.post("/api/auth/login", json={"username": "alice", "password": "correct-horse-1"})
    assert ok.status_code == 200


def test_malformed_json_keeps_its_answer(client):
    response = client.post("/api/auth/login", data='{"username": ', headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.get_json()["error"] == {"code": "BAD_REQUEST", "message": "The body must be a JSON object."}


def test_the_provider_counts_levels_and_leaves_flask_callers_alone(app):
    provider = app.json
    assert isinstance(provider, BoundedJSONProvider)
    assert provider.loads(nested(MAX_JSON_DEPTH).encode()) == json.loads(nested(MAX_JSON_DEPTH))
    # Many shallow containers are no deep nesting.
    wide = json.dumps({"items": [[{"a": [1]}] for _ in range(500)]})
    assert provider.loads(wide)["items"][0] == [{"a": [1]}]
    # Brackets inside strings do not count.
    assert provider.loads(json.dumps({"text": "[" * 100})) == {"text": "[" * 100}
    # Flask's own callers pass decoder options (the session cookie's object_hook): decoded as before.
    assert provider.loads('{"a": 1}', object_hook=lambda d: {"hooked": d}) == {"hooked": {"a": 1}}


@pytest.mark.parametrize(
    ("value", "limit", "expected"),
    [
        (1, 0, False),
        ([], 1, False),
        ([], 0, True),
        ({"a": [{"b": []}]}, 4, False),
        ({"a": [{"b": []}]}, 3, True),
        ([[], [[[]]], []], 3, True),
        ([[], [[[]]], []], 4, False),
    ],
)
def test_nesting_is_measured_without_recursion(value, limit, expected):
    assert nesting_exceeds(value, limit) is expected
