"""GET /api/admin/actions and /api/admin/broadcasts: the audit records, for administrators only."""
from __future__ import annotations

import pytest

from nexus.services import audit
from nexus.services import broadcasts as broadcast_service
from nexus.services.broadcasts import Sender
from nexus.services.rooms import Actor

SERVICE_KEY = "svc-" + "Aud1tTrail" * 4


@pytest.fixture
def app(app_factory):
    return app_factory(service_api_keys=(SERVICE_KEY,))


@pytest.fixture
def root(make_user):
    return make_user("root", role="admin")


@pytest.fixture
def people(make_user):
    return {name: make_user(name) for name in ("alice", "bob")}


def actor_of(user) -> Actor:
    return Actor(user_id=user.id, role=user.role, username=user.username, display_name=user.display_name)


def get(client, token_for, user, path, **params):
    headers = {"Authorization": f"Bearer {token_for(user)}"} if user is not None else {}
    return client.get(path, query_string=params, headers=headers)


def ok(response) -> dict:
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["success"] is True
    return body


@pytest.mark.parametrize("path", ["/api/admin/actions", "/api/admin/broadcasts"])
def test_admins_only(client, token_for, root, people, path):
    forbidden = get(client, token_for, people["alice"], path)
    assert forbidden.status_code == 403 and forbidden.get_json()["error"]["code"] == "FORBIDDEN"
    anonymous = get(client, token_for, None, path)
    assert anonymous.status_code == 401 and anonymous.get_json()["error"]["code"] == "UNAUTHORIZED"
    # A service key sends; it does not read the records.
    keyed = client.get(path, headers={"X-API-Key": SERVICE_KEY})
    assert keyed.status_code == 401 and keyed.get_json()["error"]["code"] == "UNAUTHORIZED"
    assert ok(get(client, token_for, root, path))["hasMore"] is False


def test_actions_are_listed_newest_first_and_filtered(client, db, token_for, root, people):
    alice, bob = actor_of(people["alice"]), actor_of(people["bob"])
    for i in range(5):
        audit.record_action(alice, "report.open", {"report": i}, instance_id="node-a")
        audit.record_action(bob, "report.close", None, instance_id="node-b")
    body = ok(get(client, token_for, root, "/api/admin/actions"))
    assert len(body["actions"]) == 10 and body["hasMore"] is False
    newest = body["actions"][0]
    assert newest == {"id": newest["id"], "userId": str(bob.user_id), "username": "bob", "action": "report.close",
                      "data": None, "instanceId": "node-b", "createdAt": newest["createdAt"]}

    seen, before = [], None
    while True:
        params = {"userId": alice.user_id, "limit": 2} | ({"before": before} if before else {})
        page = ok(get(client, token_for, root, "/api/admin/actions", **params))
        seen += [a["data"]["report"] for a in page["actions"]]
        if not page["hasMore"]:
            break
        before = page["actions"][-1]["id"]
    assert seen == [4, 3, 2, 1, 0]
    closes = ok(get(client, token_for, root, "/api/admin/actions", action="report.close", limit=3))
    assert [a["username"] for a in closes["actions"]] == ["bob"] * 3 and closes["hasMore"] is True
    none = ok(get(client, token_for, root, "/api/admin/actions", userId=bob.user_id, action="report.open"))
    assert none["actions"] == []


def test_broadcasts_are_listed_newest_first_by_kind(client, db, token_for, root, people, broadcasts):
    sender = Sender.of_user(root)
    broadcast_service.send_system_message(sender, "one")
    broadcast_service.send_department_message(Sender.service("hr"), "sales", "two")
    broadcast_service.send_user_message(sender, people["alice"].id, "three", title="T")
    broadcast_service.send_system_message(sender, "four")
    body = ok(get(client, token_for, root, "/api/admin/broadcasts"))
    assert [(b["kind"], b["payload"]["message"]) for b in body["broadcasts"]] == [
        ("system", "four"), ("user", "three"), ("department", "two"), ("system", "one")
    ]
    user_row = body["broadcasts"][1]
    assert user_row["target"] == str(people["alice"].id) and user_row["notificationId"] == user_row["payload"]["id"]
    assert body["broadcasts"][2]["sender"] == {"id": None, "name": "service:hr"}
    assert body["broadcasts"][2]["target"] == "sales" and body["broadcasts"][2]["instanceId"] == "test-instance"
    systems = ok(get(client, token_for, root, "/api/admin/broadcasts", kind="system", limit=1))
    assert [b["payload"]["message"] for b in systems["broadcasts"]] == ["four"] and systems["hasMore"] is True
    older = ok(get(client, token_for, root, "/api/admin/broadcasts", kind="system",
                   before=systems["broadcasts"][0]["id"]))
    assert [b["payload"]["message"] for b in older["broadcasts"]] == ["one"] and older["hasMore"] is False


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/admin/actions", {"userId": "abc"}, "userId"),
        ("/api/admin/actions", {"userId": "0"}, "userId"),
        ("/api/admin/actions", {"action": "two words"}, "action"),
        ("/api/admin/actions", {"action": "x" * 65}, "action"),
        ("/api/admin/actions", {"limit": "101"}, "limit"),
        ("/api/admin/actions", {"before": "-3"}, "before"),
        ("/api/admin/broadcasts", {"kind": "everyone"}, "kind"),
        ("/api/admin/broadcasts", {"limit": "0"}, "limit"),
        ("/api/admin/broadcasts", {"before": "soon"}, "before"),
    ],
)
def test_queries_are_validated(client, token_for, root, path, params, field):
    response = get(client, token_for, root, path, **params)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and field in error["details"]
