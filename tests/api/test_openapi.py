"""The REST API's description: GET /api/openapi.json (OpenAPI 3.1, every REST route), GET /api/errors
(the error catalogue) and the docs page at /api/docs. That each REST answer matches the document is
checked on every request of the tests' Flask client (tests/support/openapi.py)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from nexus.api import openapi
from nexus.errors import CATALOGUE
from nexus.services import messages, rooms
from nexus.services.rooms import Actor
from tests.support.openapi import check_response

ROOT = Path(__file__).resolve().parents[2]
#: The REST routes outside /api/ that the README documents with the API.
README_REST_ROUTES = {("GET", "/health"), ("GET", "/health/ready"), ("GET", "/metrics"), ("GET", "/socket-status")}
ARGUMENT = re.compile(r"<(?:[a-z_]+:)?([a-z_]+)>")


def bearer(token_for, user):
    return {"Authorization": f"Bearer {token_for(user)}"}


def rest_routes(app) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every route under /api/ and those of README_REST_ROUTES."""
    found = set()
    for rule in app.url_map.iter_rules():
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            if rule.rule.startswith("/api/") or (method, rule.rule) in README_REST_ROUTES:
                found.add((method, ARGUMENT.sub(r"{\1}", rule.rule)))
    return found


def test_every_rest_route_is_in_the_document(client, app):
    document = client.get("/api/openapi.json").get_json()
    described = {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}
    routes = rest_routes(app)
    assert README_REST_ROUTES <= routes
    assert len(routes) > 25
    assert routes - described == set(), "REST routes without an OpenAPI description (add @describe)"
    assert described - routes == set(), "operations in the document that no route serves"


def test_the_document_is_valid_openapi_3_1(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    document = response.get_json()
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on anything that is not valid OpenAPI 3.1
    operation_ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_operations_name_their_schemas_auth_and_errors(client):
    document = client.get("/api/openapi.json").get_json()
    login = document["paths"]["/api/auth/login"]["post"]
    assert login["security"] == []
    assert login["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Login"}
    assert login["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/LoginResponse"
    }
    assert _codes(login, 401) == ["INVALID_CREDENTIALS"]
    assert _codes(login, 400) == ["BAD_REQUEST", "VALIDATION_ERROR"]
    assert _codes(login, 429) == ["RATE_LIMITED"]

    broadcast = document["paths"]["/api/admin/broadcast"]["post"]
    assert broadcast["security"] == [{"bearerAuth": []}, {"serviceKey": []}]
    assert set(_codes(broadcast, 403)) == {"FORBIDDEN", "USER_BANNED"}

    history = document["paths"]["/api/rooms/{ref}/messages"]["get"]
    query = {p["name"]: p["schema"] for p in history["parameters"] if p["in"] == "query"}
    assert set(query) == {"before", "after", "limit", "order"}
    assert query["order"]["enum"] == ["asc", "desc"] and query["order"]["default"] == "desc"
    assert set(_codes(history, 404)) == {"ROOM_NOT_FOUND", "NOT_FOUND"}

    users = document["paths"]["/api/users"]["get"]
    cursor = next(p for p in users["parameters"] if p["name"] == "cursor")
    # Python's end of text (\Z) is written as JSON Schema (ECMA-262) reads it.
    assert cursor["schema"]["pattern"] == "^[A-Za-z0-9_.-]{3,32}$"
    assert "/health" in document["paths"] and "429" not in document["paths"]["/health"]["get"]["responses"]


def _codes(operation, status):
    schema = operation["responses"][str(status)]["content"]["application/json"]["schema"]
    return schema["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]


def test_error_responses_come_from_the_catalogue(client):
    document = client.get("/api/openapi.json").get_json()
    assert document["components"]["schemas"]["ErrorObject"]["properties"]["code"]["enum"] == sorted(CATALOGUE)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "500" in operation["responses"], (method, path)
            for status, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                if "allOf" not in schema:
                    continue
                for code in schema["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]:
                    assert CATALOGUE[code][0] == int(status), (method, path, code)


def test_the_error_catalogue_is_served(client):
    response = client.get("/api/errors")
    assert response.status_code == 200
    entries = response.get_json()["errors"]
    assert [entry["code"] for entry in entries] == list(CATALOGUE)
    assert {"code": "ROOM_NOT_FOUND", "status": 404, "message": "No such room."} in entries
    assert all(set(entry) == {"code", "status", "message"} for entry in entries)
    readme = (ROOT / "README.md").read_text()
    assert "/api/errors" in readme and "/api/openapi.json" in readme and "/api/docs" in readme


def test_an_answer_outside_the_document_is_caught(app, make_user, token_for):
    user = make_user("alice")
    plain = app.test_client()  # not the checking client: the answer is changed before it is checked
    response = plain.get("/api/auth/me", headers=bearer(token_for, user))
    check_response(app, response)
    response.set_data(b'{"success": true, "user": {"id": 1}}')
    with pytest.raises(AssertionError, match="outside the OpenAPI document"):
        check_response(app, response)
    refused = plain.get("/api/auth/me")
    refused.set_data(b'{"success": false, "error": {"code": "ROOM_NOT_FOUND", "message": "no"}}')
    with pytest.raises(AssertionError, match="outside the OpenAPI document"):
        check_response(app, refused)


# -- the docs page ---------------------------------------------------------------------------


def test_the_docs_page_loads_swagger_ui_from_node_modules_under_a_strict_csp(client):
    page = client.get("/api/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
    html = page.get_data(as_text=True)
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="' in attributes and not body.strip() for attributes, body in scripts)
    assert "<style" not in html and " style=" not in html and "http" not in html  # nothing inline, no CDN
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.mimetype in ("text/javascript", "text/css"), (url, asset.mimetype)
    start = client.get("/api/docs/assets/api-docs.js").get_data(as_text=True)
    assert "SwaggerUIBundle" in start and "data-spec-url" in start
    assert 'data-spec-url="/api/openapi.json"' in html
    assert client.get("/api/docs/assets/package.json").status_code == 404


def test_the_docs_page_says_what_to_install_without_node_modules(client, monkeypatch, tmp_path):
    monkeypatch.setattr(openapi, "REPO_ROOT", tmp_path)
    monkeypatch.chdir(tmp_path)
    page = client.get("/api/docs")
    assert page.status_code == 503 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert "swagger-ui-dist" in text and "npm ci" in text and "/api/openapi.json" in text
    asset = client.get("/api/docs/assets/swagger-ui-bundle.js")
    assert asset.status_code == 503 and "npm ci" in asset.get_data(as_text=True)
    assert client.get("/api/openapi.json").status_code == 200


# -- what the property-based run found -------------------------------------------------------


@pytest.mark.parametrize("number", [2**31, 2**53, 2**64])
def test_ids_past_the_database_columns_name_nothing(client, make_user, token_for, number):
    owner = make_user("owner")
    headers = bearer(token_for, owner)
    assert client.post("/api/rooms", json={"name": "plans", "kind": "private"}, headers=headers).status_code == 201
    removed = client.delete(f"/api/rooms/plans/members/{number}", headers=headers)
    assert removed.status_code == 404 and removed.get_json()["error"]["code"] == "NOT_FOUND"
    read = client.post(f"/api/notifications/{number}/read", headers=headers)
    assert read.status_code == 404 and read.get_json()["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("ref", ["³", "٣", "1²"])
def test_a_room_reference_of_other_digits_is_a_name(client, make_user, token_for, ref):
    headers = bearer(token_for, make_user("alice"))
    for answer in (
        client.get(f"/api/rooms/{ref}", headers=headers),
        client.get(f"/api/rooms/{ref}/messages", headers=headers),
        client.post(f"/api/rooms/{ref}/members", json={"userId": 1}, headers=headers),
    ):
        assert answer.status_code == 404 and answer.get_json()["error"]["code"] == "ROOM_NOT_FOUND"


def test_history_bounds_past_the_seq_column_read_as_its_largest_seq(client, db, make_user, token_for):
    alice, bob = make_user("alice"), make_user("bob")
    actor = Actor(user_id=alice.id, role="user", username="alice", display_name="alice")
    rooms.join(actor, "general", auto_create=True, guests_can_chat=False)
    for i in range(3):
        messages.send_to_room(actor, "general", {"content": f"m{i}", "type": "text"})
    messages.send_direct(actor, bob.id, {"content": "dm", "type": "text"}, sender_sid=None)
    headers = bearer(token_for, alice)
    huge = 2**53 - 1  # Number.MAX_SAFE_INTEGER, a client's "from the newest"
    newest = client.get(f"/api/rooms/general/messages?before={huge}", headers=headers)
    assert newest.status_code == 200 and [m["seq"] for m in newest.get_json()["messages"]] == [3, 2, 1]
    after = client.get(f"/api/rooms/general/messages?after={huge}", headers=headers)
    assert after.status_code == 200 and after.get_json()["messages"] == []
    direct = client.get(f"/api/conversations/{bob.id}/messages?before={huge}&after=0", headers=headers)
    assert direct.status_code == 200 and [m["content"] for m in direct.get_json()["messages"]] == ["dm"]
