"""Rate limits of events: per user (never per socket), costs per event, refusal, notice, cut-off; HTTP limits."""
from __future__ import annotations

import pytest

from tests.support import services


def received(test_client, name, namespace="/"):
    return [item["args"][0] for item in test_client.get_received(namespace) if item["name"] == name]


@pytest.fixture
def limited(app_factory):
    return app_factory(rate_limit_max_requests=6, rate_limit_window_ms=60_000)


def token(app, username: str) -> str:
    """A user of this app (made on first use) and an access token for them.

    The suite's make_user/token_for fixtures belong to the default `app`; these tests build
    their own apps, and Flask-SocketIO's server is the one of the app built last.
    """
    from nexus.services.tokens import issue_access_token
    from nexus.services.users import create_user, find_by_username

    with app.app_context():
        user = find_by_username(username) or create_user(username, "correct-horse-1")
        return issue_access_token(user)


def test_over_the_limit_events_are_refused_with_retry_after_and_one_notice(limited):
    from nexus.extensions import socketio

    client = socketio.test_client(limited, auth={"token": token(limited, "alice")})
    for _ in range(6):
        assert client.emit("ping", callback=True)["success"]
    refused = client.emit("ping", callback=True)
    assert refused["success"] is False and refused["error"]["code"] == "RATE_LIMITED"
    assert 0 < refused["error"]["details"]["retryAfterMs"] <= 60_000
    client.emit("ping", callback=True)
    notices = received(client, "rate_limit_exceeded")
    assert len(notices) == 1 and notices[0]["event"] == "ping" and notices[0]["retryAfterMs"] > 0
    client.emit("ping")  # no ack asked: the refusal comes as an error event
    assert received(client, "error")[-1]["code"] == "RATE_LIMITED"


def test_the_allowance_is_per_user_not_per_socket_and_costs_differ(limited):
    from nexus.extensions import socketio

    alice = token(limited, "alice")
    first = socketio.test_client(limited, auth={"token": alice})
    first.emit("join_room", "general", callback=True)  # costs 2
    sent = first.emit("send_message", {"roomId": "general", "content": "hi"}, callback=True)  # costs 3
    assert sent["success"]
    # A new socket of the same user shares the 1 unit left: a message (3) is refused, a ping (1) is not.
    second = socketio.test_client(limited, auth={"token": alice})
    again = second.emit("send_message", {"roomId": "general", "content": "again"}, callback=True)
    assert again["error"]["code"] == "RATE_LIMITED"
    assert second.emit("ping", callback=True)["success"]
    assert second.emit("ping", callback=True)["error"]["code"] == "RATE_LIMITED"
    # Nothing was stored for the refused message, and bob has his own allowance.
    other = socketio.test_client(limited, auth={"token": token(limited, "bob")})
    other.emit("join_room", "general", callback=True)
    history = other.emit("get_history", {"roomId": "general"}, callback=True)
    assert [m["content"] for m in history["messages"]] == ["hi"]


def test_a_socket_that_keeps_going_is_disconnected(app_factory):
    from nexus.extensions import socketio

    app = app_factory(rate_limit_max_requests=2, rate_limit_window_ms=60_000)
    client = socketio.test_client(app, auth={"token": token(app, "alice")})
    for _ in range(2):
        client.emit("ping", callback=True)
    for _ in range(10):  # cut off after max(10, limit) refusals
        assert client.emit("ping", callback=True)["error"]["code"] == "RATE_LIMITED"
    client.emit("ping", callback=True)
    socketio.sleep(0.2)  # the disconnect runs as a background task
    assert not client.is_connected()


def test_guests_are_limited_by_address(app_factory):
    from nexus.extensions import socketio

    app = app_factory(rate_limit_max_requests=3, rate_limit_window_ms=60_000)
    one, two = socketio.test_client(app), socketio.test_client(app)  # both from the same address
    for _ in range(3):
        assert one.emit("ping", callback=True)["success"]
    assert two.emit("ping", callback=True)["error"]["code"] == "RATE_LIMITED"


def test_two_instances_share_the_allowance_through_redis(redis_channel, app_factory):
    from nexus.extensions import socketio

    options = dict(rate_limit_max_requests=4, redis_url=services.REDIS_URL, queue_channel=redis_channel)
    a = app_factory(instance_id="a", **options)
    alice = token(a, "alice")
    on_a = socketio.test_client(a, auth={"token": alice})
    for _ in range(4):
        assert on_a.emit("ping", callback=True)["success"]
    b = app_factory(instance_id="b", **options)
    on_b = socketio.test_client(b, auth={"token": alice})
    assert on_b.emit("ping", callback=True)["error"]["code"] == "RATE_LIMITED"


def test_login_is_limited_per_address_with_the_error_contract(app_factory):
    app = app_factory(login_rate_limit="3 per minute")
    client = app.test_client()
    token(app, "alice")
    for _ in range(3):
        assert client.post("/api/auth/login", json={"username": "alice", "password": "wrong-one"}).status_code == 401
    limited = client.post("/api/auth/login", json={"username": "alice", "password": "correct-horse-1"})
    assert limited.status_code == 429
    assert limited.get_json()["error"]["code"] == "RATE_LIMITED"
    assert int(limited.headers["Retry-After"]) > 0
    # Health checks are never limited.
    assert all(client.get("/health").status_code == 200 for _ in range(5))


def test_trusted_proxies_decide_which_address_is_limited(app_factory):
    app = app_factory(login_rate_limit="2 per minute", trusted_proxies=1)
    client = app.test_client()
    token(app, "alice")

    def attempt(forwarded_for):
        body = {"username": "alice", "password": "wrong-one"}
        return client.post("/api/auth/login", json=body, headers={"X-Forwarded-For": forwarded_for}).status_code

    assert [attempt("198.51.100.7") for _ in range(3)] == [401, 401, 429]
    assert attempt("203.0.113.9") == 401  # another client behind the same proxy has its own allowance


def test_caps_on_sockets_per_user_and_rooms_per_socket(app_factory):
    from nexus.extensions import socketio

    app = app_factory(max_sockets_per_user=2, max_rooms_per_socket=2)
    alice = token(app, "alice")
    first, second = (socketio.test_client(app, auth={"token": alice}) for _ in range(2))
    third = socketio.test_client(app, auth={"token": alice})
    assert first.is_connected() and second.is_connected() and not third.is_connected()
    assert first.emit("join_room", "one", callback=True)["success"]
    assert first.emit("join_room", "two", callback=True)["success"]
    assert first.emit("join_room", "one", callback=True)["success"]  # already in: not a new room
    refused = first.emit("join_room", "three", callback=True)
    assert refused["error"]["code"] == "LIMIT_REACHED"
    first.emit("leave_room", "one", callback=True)
    assert first.emit("join_room", "three", callback=True)["success"]
    first.disconnect()
    assert socketio.test_client(app, auth={"token": alice}).is_connected()  # a slot is free again
