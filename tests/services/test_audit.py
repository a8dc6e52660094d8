"""The audit trail: what record_action stores and refuses, that it tells no one, and how it is listed."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from nexus.errors import NexusError
from nexus.models import UserAction
from nexus.services import audit
from nexus.services.rooms import Actor


def actor_of(user) -> Actor:
    return Actor(user_id=user.id, role=user.role, username=user.username, display_name=user.display_name)


@pytest.fixture
def alice(make_user):
    return actor_of(make_user("alice"))


@pytest.fixture
def bob(make_user):
    return actor_of(make_user("bob"))


def stored(db) -> list[UserAction]:
    db.session.rollback()
    return list(db.session.scalars(select(UserAction).order_by(UserAction.id)))


def nested(depth: int):
    value = "leaf"
    for _ in range(depth):
        value = {"next": value}
    return value


@pytest.mark.parametrize(
    "data",
    [None, "text", 42, 1.5, True, [], {}, ["a", 1, None], {"page": "/reports", "filters": {"year": 2024}},
     nested(5), [[[[["deepest"]]]]]],
)
def test_record_action_stores_any_bounded_json_value_and_tells_no_one(db, broadcasts, alice, data):
    recorded = audit.record_action(alice, "page.view", data, instance_id="node-7")
    [row] = stored(db)
    assert recorded == {"id": str(row.id), "action": "page.view", "createdAt": recorded["createdAt"]}
    assert recorded["createdAt"].endswith("Z")
    assert (row.user_id, row.action, row.data, row.instance_id) == (alice.user_id, "page.view", data, "node-7")
    assert broadcasts.sent == []


def test_guests_are_refused(db, broadcasts):
    with pytest.raises(NexusError) as refused:
        audit.record_action(Actor(user_id=None, guest_key="g1"), "click", {}, instance_id="node-7")
    assert refused.value.code == "FORBIDDEN"
    assert stored(db) == [] and broadcasts.sent == []


@pytest.mark.parametrize(
    ("action", "data", "field"),
    [
        ("", {}, "action"),
        ("x" * 65, {}, "action"),
        ("two words", {}, "action"),
        ("drop;table", {}, "action"),
        ("naïve", {}, "action"),
        ("line\n", {}, "action"),
        (None, {}, "action"),
        (7, {}, "action"),
        ("click", nested(6), "data"),
        ("click", [[[[[["too deep"]]]]]], "data"),
        ("click", {"blob": "x" * 4096}, "data"),
        ("click", ["\u00e9" * 2047], "data"),
        ("click", {"ratio": float("inf")}, "data"),
        ("click", {"at": object()}, "data"),
    ],
)
def test_bad_actions_are_refused_with_a_clear_message(db, broadcasts, alice, action, data, field):
    with pytest.raises(NexusError) as refused:
        audit.record_action(alice, action, data, instance_id="node-7")
    assert refused.value.code == "VALIDATION_ERROR"
    assert list(refused.value.details) == [field] and refused.value.message.startswith(field + ":")
    assert stored(db) == [] and broadcasts.sent == []


def test_edges_of_the_bounds_are_accepted(db, alice):
    audit.record_action(alice, "a", None, instance_id="i")
    audit.record_action(alice, "A-z_0.9:" + "x" * 56, {"blob": "x" * (4096 - len('{"blob":""}'))}, instance_id="i")
    assert [len(row.action) for row in stored(db)] == [1, 64]


def test_a_very_deep_value_is_refused_without_walking_all_of_it(db, alice):
    deep: list = []
    for _ in range(50_000):
        deep = [deep]
    with pytest.raises(NexusError) as refused:
        audit.record_action(alice, "click", deep, instance_id="i")
    assert "deeper than 5" in refused.value.message


def test_list_actions_pages_newest_first_with_filters(db, make_user, alice, bob):
    for i in range(4):
        audit.record_action(alice, "click", {"n": i}, instance_id="node-1")
        audit.record_action(bob, "scroll", {"n": i}, instance_id="node-2")
    audit.record_action(alice, "scroll", None, instance_id="node-1")
    everything = audit.list_actions(user_id=None, action=None, before=None, limit=100)
    assert len(everything["actions"]) == 9 and everything["hasMore"] is False
    newest = everything["actions"][0]
    assert newest == {"id": newest["id"], "userId": str(alice.user_id), "username": "alice", "action": "scroll",
                      "data": None, "instanceId": "node-1", "createdAt": newest["createdAt"]}
    seen, before = [], None
    while True:
        page = audit.list_actions(user_id=alice.user_id, action=None, before=before, limit=2)
        seen += [(a["action"], a["data"]) for a in page["actions"]]
        assert all(a["username"] == "alice" for a in page["actions"])
        if not page["hasMore"]:
            break
        before = int(page["actions"][-1]["id"])
    assert seen == [("scroll", None)] + [("click", {"n": i}) for i in (3, 2, 1, 0)]
    scrolls = audit.list_actions(user_id=None, action="scroll", before=None, limit=3)
    assert [a["username"] for a in scrolls["actions"]] == ["alice", "bob", "bob"] and scrolls["hasMore"] is True
    both = audit.list_actions(user_id=bob.user_id, action="click", before=None, limit=10)
    assert both == {"actions": [], "hasMore": False}
    assert db.session.scalar(select(func.count()).select_from(UserAction)) == 9
