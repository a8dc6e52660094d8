"""The user_action event and the notification events of the default namespace, through the test client."""
from __future__ import annotations

from nexus.models import UserAction
from nexus.services import notifications


def received(test_client, name, namespace="/"):
    return [item["args"][0] for item in test_client.get_received(namespace) if item["name"] == name]


def test_unread_notifications_arrive_on_connect_and_can_be_read(app, db, make_user, token_for, socket_client):
    alice = make_user("alice")
    first = notifications.notify(alice.id, "Welcome", "first")
    second = notifications.notify(alice.id, "Reminder", "second", type="warning")
    client = socket_client(token=token_for(alice))
    delivered = received(client, "notification")
    assert [n["id"] for n in delivered] == [first["id"], second["id"]]  # oldest first
    assert delivered[1]["type"] == "warning" and delivered[1]["read"] is False
    ack = client.emit("notification_read", {"id": first["id"]}, callback=True)
    assert ack["success"] and ack["notification"]["read"] is True
    assert client.emit("notification_read", int(second["id"]), callback=True)["success"]  # the id alone
    again = socket_client(token=token_for(alice))
    assert received(again, "notification") == []
    # Someone else's notification, or nonsense, is refused with a code.
    bob = make_user("bob")
    theirs = notifications.notify(bob.id, "Private", "for bob")
    assert client.emit("notification_read", {"id": theirs["id"]}, callback=True)["error"]["code"] == "NOT_FOUND"
    assert client.emit("notification_read", {"id": "x"}, callback=True)["error"]["code"] == "VALIDATION_ERROR"
    guest = socket_client()
    assert guest.emit("notification_read", {"id": theirs["id"]}, callback=True)["error"]["code"] == "FORBIDDEN"
    assert received(guest, "notification") == []


def test_user_actions_are_recorded_and_never_echoed(app, db, make_user, token_for, socket_client):
    alice, bob = make_user("alice"), make_user("bob")
    actor = socket_client(token=token_for(alice))
    watcher = socket_client(token=token_for(bob))
    watcher.get_received()
    actor.emit("user_action", {"action": "page_view", "data": {"page": "/settings"}})  # sent without a callback: no ack
    ack = actor.emit("user_action", {"action": "clicked", "data": [1, 2, 3]}, callback=True)
    assert ack["success"] and ack["action"] == "clicked"
    rows = db.session.query(UserAction).order_by(UserAction.id).all()
    assert [(r.user_id, r.action, r.data, r.instance_id) for r in rows] == [
        (alice.id, "page_view", {"page": "/settings"}, "test-instance"),
        (alice.id, "clicked", [1, 2, 3], "test-instance"),
    ]
    assert watcher.get_received() == []  # nobody else hears of it
    bad = actor.emit("user_action", {"action": "x" * 65}, callback=True)
    assert bad["error"]["code"] == "VALIDATION_ERROR"
    huge = actor.emit("user_action", {"action": "big", "data": {"blob": "y" * 10_000}}, callback=True)
    assert huge["error"]["code"] == "VALIDATION_ERROR"
    guest = socket_client()
    assert guest.emit("user_action", {"action": "x"}, callback=True)["error"]["code"] == "FORBIDDEN"
    assert db.session.query(UserAction).count() == 2
