"""What a connection costs the database, and the verified tokens an instance keeps: forgotten at once
when a token is revoked or its account changes (on other instances: tests/live/test_scale_out.py)."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import pytest
from sqlalchemy import event

from nexus.extensions import db as nexus_db
from nexus.extensions import socketio
from nexus.services import notifications, tokens, users
from nexus.services.rooms import Actor


@contextlib.contextmanager
def counting(app) -> Iterator[dict[str, Any]]:
    """The statements run and the pool checkouts made while the block runs."""
    with app.app_context():
        engine = nexus_db.engine
    seen: dict[str, Any] = {"statements": [], "checkouts": 0}

    def statement(conn, cursor, text, params, context, executemany):
        seen["statements"].append(" ".join(text.split()))

    def checkout(*_: Any) -> None:
        seen["checkouts"] += 1

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine.pool, "checkout", checkout)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine.pool, "checkout", checkout)


@pytest.fixture
def account(app):
    """Make an account outside any session the sockets would share (each connection reads its own)."""

    def make(username: str, **fields: Any) -> Any:
        with app.app_context():
            user = users.create_user(username, "correct-horse-1", **fields)
            return user.id

    return make


@pytest.fixture
def token_of(app):
    def token(user_id: int) -> str:
        with app.app_context():
            return tokens.issue_access_token(nexus_db.session.get(users.User, user_id))

    return token


@pytest.fixture
def sockets() -> Iterator[Any]:
    made: list[Any] = []

    def connect(app, token: str) -> Any:
        client = socketio.test_client(app, auth={"token": token})
        made.append(client)
        return client

    yield connect
    for client in made:
        if client.is_connected():
            client.disconnect()


def welcome_of(client) -> dict[str, Any]:
    [welcome] = [item["args"][0] for item in client.get_received() if item["name"] == "connected"]
    return welcome


def test_a_socket_whose_token_this_instance_verified_reads_its_welcome_in_one_checkout(app, account, token_of,
                                                                                        sockets):
    alice = account("alice")
    token = token_of(alice)
    with app.app_context():
        notifications.notify(alice, "Hello", "while you were away")
    assert sockets(app, token).is_connected()  # verifies the token; alice comes online
    with counting(app) as seen:
        second = sockets(app, token)
    assert second.is_connected()
    # The unread counts and the unread notifications: no token, user, presence or roster read, no write.
    assert len(seen["statements"]) == 2, seen["statements"]
    assert all(text.startswith("SELECT") for text in seen["statements"]), seen["statements"]
    assert seen["checkouts"] == 1
    assert [item["args"][0]["title"] for item in second.get_received() if item["name"] == "notification"] == ["Hello"]


def test_a_new_token_is_verified_with_one_statement(app, account, token_of, sockets):
    token = token_of(account("bob"))
    with counting(app) as seen:
        assert sockets(app, token).is_connected()
    reads_of_users = [text for text in seen["statements"] if "FROM users" in text and "revoked_tokens" in text]
    assert len(reads_of_users) == 1, seen["statements"]
    assert not [text for text in seen["statements"] if text.startswith("SELECT revoked_tokens")]


def test_a_revoked_token_is_refused_at_once_though_it_was_just_verified(app, account, token_of, sockets):
    carol = account("carol")
    token = token_of(carol)
    assert sockets(app, token).is_connected()
    with app.test_request_context():
        claims = tokens.resolve_token(token).claims
        tokens.revoke(claims)
    again = sockets(app, token)
    assert not again.is_connected()


def test_a_ban_refuses_the_next_connection_at_once_and_an_unban_lets_it_in(app, account, token_of, sockets):
    admin, dora = account("root", role="admin"), account("dora")
    token = token_of(dora)
    assert sockets(app, token).is_connected()
    root = Actor(user_id=admin, role="admin", username="root")
    with app.app_context():
        users.change_role(root, dora, "banned", disconnect=lambda user_id, reason: 0)
    assert not sockets(app, token).is_connected()
    with app.app_context():
        users.unban(root, dora)
    assert sockets(app, token).is_connected()


def test_a_profile_or_role_change_reaches_the_next_connection_at_once(app, account, token_of, sockets):
    admin, erin = account("root", role="admin"), account("erin", display_name="Erin")
    token = token_of(erin)
    assert welcome_of(sockets(app, token))["user"]["displayName"] == "Erin"
    with app.app_context():
        users.update_profile(erin, {"display_name": "Erin B.", "department": "ops"})
    user = welcome_of(sockets(app, token))["user"]
    assert (user["displayName"], user["department"], user["role"]) == ("Erin B.", "ops", "user")
    with app.app_context():
        users.change_role(Actor(user_id=admin, role="admin"), erin, "moderator", disconnect=lambda *_: 0)
    assert welcome_of(sockets(app, token))["user"]["role"] == "moderator"


def test_the_kept_tokens_of_an_instance_expire_are_bounded_and_forget_what_is_dropped_while_read():
    now = [0.0]
    cache = tokens.IdentityCache(ttl_s=5.0, max_entries=3, clock=lambda: now[0])

    def identity(user_id: int, jti: str) -> tokens.SocketIdentity:
        account = tokens.Account(id=user_id, username=f"u{user_id}", display_name="U", role="user", department=None)
        return tokens.SocketIdentity(account=account, jti=jti, expires_at=None)

    cache.put("t1", identity(1, "j1"), cache.epoch)
    now[0] = 4.9
    assert cache.get("t1") is not None
    now[0] = 5.0
    assert cache.get("t1") is None and len(cache) == 0
    for n in range(1, 5):
        cache.put(f"t{n}", identity(n, f"j{n}"), cache.epoch)
    assert len(cache) == 3 and cache.get("t1") is None and cache.get("t4") is not None  # the oldest went
    assert cache.forget(user_id=3) == 1 and cache.get("t3") is None
    assert cache.forget(jti="j4") == 1 and cache.get("t4") is None and cache.get("t2") is not None
    now[0] = 20.0
    cache.put("t6", identity(6, "j6"), cache.epoch)
    assert len(cache) == 1  # the expired ones are dropped as new ones come
    # Read before a forget: possibly older than what caused it, so not kept.
    epoch = cache.epoch
    cache.forget(user_id=99)
    cache.put("t5", identity(5, "j5"), epoch)
    assert cache.get("t5") is None
