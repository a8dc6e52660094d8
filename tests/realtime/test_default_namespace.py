"""The default namespace with Flask-SocketIO's test client: connection, welcome, ping, authenticate, errors."""
from __future__ import annotations

import logging

import pytest

from nexus.extensions import socketio


@pytest.fixture
def alice(make_user):
    return make_user("alice", display_name="Alice", department="sales")


def received(test_client, name):
    return [item["args"][0] for item in test_client.get_received() if item["name"] == name]


def rooms_of(app, test_client, namespace="/"):
    sid = test_client.eio_sid and socketio.server.manager.sid_from_eio_sid(test_client.eio_sid, namespace)
    return set(socketio.server.manager.get_rooms(sid, namespace)) - {sid}


def test_connect_with_token_in_auth(app, socket_client, alice, token_for):
    test_client = socket_client(token=token_for(alice))
    assert test_client.is_connected()
    [welcome] = received(test_client, "connected")
    assert welcome["guest"] is False
    assert welcome["user"] == {
        "id": str(alice.id),
        "userId": str(alice.id),
        "username": "alice",
        "displayName": "Alice",
        "role": "user",
        "department": "sales",
    }
    assert welcome["instanceId"] == "test-instance"
    assert isinstance(welcome["timestamp"], int) and welcome["serverTime"].endswith("Z")
    assert rooms_of(app, test_client) == {f"user_{alice.id}", "all_users", "department_sales"}


def test_connect_with_token_in_query_string(socket_client, alice, token_for):
    test_client = socket_client(query_token=token_for(alice))
    assert received(test_client, "connected")[0]["user"]["username"] == "alice"


def test_role_rooms(app, socket_client, make_user, token_for):
    admin = make_user("root", role="admin")
    moderator = make_user("mod", role="moderator")
    assert "admins" in rooms_of(app, socket_client(token=token_for(admin)))
    assert "moderators" in rooms_of(app, socket_client(token=token_for(moderator)))


def test_guest_connection(app, socket_client):
    test_client = socket_client()
    [welcome] = received(test_client, "connected")
    assert welcome["guest"] is True and welcome["user"] is None
    assert rooms_of(app, test_client) == set()


def test_guests_refused_when_disabled(app_factory):
    app = app_factory(allow_guests=False)
    test_client = socketio.test_client(app)
    assert not test_client.is_connected()


@pytest.mark.parametrize(
    ("token", "code"),
    [("garbage", "INVALID_TOKEN"), ("", None), ("Bearer garbage", "INVALID_TOKEN")],
)
def test_bad_tokens_are_refused(socket_client, token, code):
    test_client = socket_client(auth={"token": token})
    if code is None:  # an empty token is no token: a guest
        assert test_client.is_connected()
    else:
        assert not test_client.is_connected()


def refusal(app, auth, query: str = "") -> dict:
    """The connect error's payload (Flask-SocketIO's test client drops it, so call the handler)."""
    from flask import request
    from flask_socketio import ConnectionRefusedError

    namespace = socketio.server.namespace_handlers["/"]
    with app.test_request_context("/socket.io/" + query):
        request.sid = "sid-1"
        request.namespace = "/"
        with pytest.raises(ConnectionRefusedError) as refused:
            namespace.on_connect(auth)
    return refused.value.error_args


def test_refusal_carries_code_and_message(app):
    assert refusal(app, {"token": "garbage"}) == {
        "message": "The token is not valid.",
        "data": {"code": "INVALID_TOKEN", "message": "The token is not valid."},
    }
    assert refusal(app, {"token": 42})["data"]["code"] == "INVALID_TOKEN"
    assert refusal(app, None, "?token=garbage")["data"]["code"] == "INVALID_TOKEN"


def test_expired_revoked_refresh_and_banned_tokens_are_refused_with_their_code(app, db, alice, make_user):
    from datetime import timedelta

    from flask_jwt_extended import create_access_token, create_refresh_token, decode_token

    from nexus.services import tokens

    expired = create_access_token(identity=str(alice.id), expires_delta=timedelta(seconds=-5))
    assert refusal(app, {"token": expired})["data"] == {"code": "TOKEN_EXPIRED", "message": "The token has expired."}

    refresh = create_refresh_token(identity=str(alice.id))
    assert refusal(app, {"token": refresh})["data"]["code"] == "INVALID_TOKEN"

    revoked = create_access_token(identity=str(alice.id))
    tokens.revoke(decode_token(revoked))
    assert refusal(app, {"token": revoked})["data"]["code"] == "TOKEN_REVOKED"

    mallory = make_user("mallory", role="banned")
    banned = create_access_token(identity=str(mallory.id))
    assert refusal(app, {"token": banned})["data"]["code"] == "USER_BANNED"

    ghost = create_access_token(identity="999999")
    assert refusal(app, {"token": ghost})["data"]["code"] == "INVALID_TOKEN"


def test_guests_refused_with_unauthorized_when_disabled(app_factory):
    app = app_factory(allow_guests=False)
    assert refusal(app, None)["data"] == {"code": "UNAUTHORIZED", "message": "Authentication token required."}


def test_banned_user_is_refused(socket_client, make_user, token_for):
    mallory = make_user("mallory")
    token = token_for(mallory)
    mallory.role = "banned"
    from nexus.extensions import db

    db.session.commit()
    assert not socket_client(token=token).is_connected()


def test_ping_answered_by_its_ack(socket_client, alice, token_for):
    test_client = socket_client(token=token_for(alice))
    test_client.get_received()
    ack = test_client.emit("ping", callback=True)
    assert ack["success"] is True and isinstance(ack["timestamp"], int)
    [pong] = received(test_client, "pong")
    assert pong["timestamp"] == ack["timestamp"]


def test_ping_with_timestamp_answered_by_pong(socket_client):
    test_client = socket_client()
    test_client.get_received()
    test_client.emit("ping", {"timestamp": 1700000000000})
    [pong] = received(test_client, "pong")
    assert pong["clientTimestamp"] == 1700000000000 and pong["timestamp"] > 1700000000000


def test_unknown_event_with_and_without_ack(socket_client):
    test_client = socket_client()
    test_client.get_received()
    assert test_client.emit("no_such_event", {"x": 1}, callback=True) == {
        "success": False,
        "error": {"code": "UNKNOWN_EVENT", "message": "Unknown event 'no_such_event'."},
    }
    assert received(test_client, "error") == []  # the ack carried it
    test_client.emit("no_such_event", {"x": 1})
    assert received(test_client, "error") == [
        {"code": "UNKNOWN_EVENT", "message": "Unknown event 'no_such_event'.", "event": "no_such_event"}
    ]


def test_authenticate_upgrades_a_guest(app, socket_client, alice, token_for):
    test_client = socket_client()
    ack = test_client.emit("authenticate", token_for(alice), callback=True)
    assert ack["success"] is True
    assert ack["user"]["username"] == "alice"
    assert f"user_{alice.id}" in rooms_of(app, test_client)


def test_authenticate_with_a_bad_token_keeps_the_guest(app, socket_client):
    test_client = socket_client()
    ack = test_client.emit("authenticate", "garbage", callback=True)
    assert ack == {"success": False, "error": {"code": "INVALID_TOKEN", "message": "The token is not valid."}}
    assert rooms_of(app, test_client) == set()
    ack = test_client.emit("authenticate", callback=True)
    assert ack["error"]["code"] == "INVALID_TOKEN"


def test_authenticate_as_another_user_moves_the_rooms(app, socket_client, alice, make_user, token_for):
    bob = make_user("bob", department="ops")
    test_client = socket_client(token=token_for(alice))
    test_client.emit("authenticate", {"token": token_for(bob)}, callback=True)
    rooms = rooms_of(app, test_client)
    assert f"user_{bob.id}" in rooms and "department_ops" in rooms
    assert f"user_{alice.id}" not in rooms and "department_sales" not in rooms


def test_internal_errors_reach_the_client_as_a_reference_only(app, socket_client, monkeypatch, caplog):
    namespace = socketio.server.namespace_handlers["/"]

    def explode(session, *args):
        raise RuntimeError("secret detail: /etc/passwd SELECT * FROM users")

    monkeypatch.setattr(namespace, "on_ping", explode)
    test_client = socket_client()
    with caplog.at_level(logging.ERROR, logger="nexus.realtime"):
        ack = test_client.emit("ping", callback=True)
    assert ack["success"] is False
    error = ack["error"]
    assert error["code"] == "INTERNAL_ERROR"
    assert "secret" not in error["message"] and "passwd" not in str(error)
    reference = error["details"]["reference"]
    assert reference in error["message"]
    assert any(reference in record.getMessage() for record in caplog.records)
    assert test_client.is_connected()


def test_disconnect_forgets_the_socket(app, socket_client, alice, token_for):
    sessions = app.extensions["nexus.sessions"]
    test_client = socket_client(token=token_for(alice))
    assert sessions.sids_of_user(alice.id)
    test_client.disconnect()
    assert sessions.sids_of_user(alice.id) == set()
    assert len(sessions) == 0


def test_an_expired_token_stops_events_until_authenticate(app, socket_client, alice, token_for):
    import time

    client = socket_client(token=token_for(alice))
    for session in app.extensions["nexus.sessions"]:
        session.token_expires_at = time.time() - 1  # the token ran out while connected
    refused = client.emit("join_room", "general", callback=True)
    assert refused["success"] is False and refused["error"]["code"] == "TOKEN_EXPIRED"
    assert client.emit("ping", callback=True)["success"]  # keeping alive is allowed
    renewed = client.emit("authenticate", token_for(alice), callback=True)
    assert renewed["success"] and renewed["user"]["username"] == "alice"
    assert client.emit("join_room", "general", callback=True)["success"]


def test_identity_comes_from_the_token_never_from_the_payload(app, socket_client, alice, make_user, token_for):
    admin = make_user("boss", role="admin")
    client = socket_client(token=token_for(alice))
    client.emit("join_room", "general", callback=True)
    ack = client.emit(
        "send_message",
        {"roomId": "general", "content": "hi", "userId": admin.id, "from": str(admin.id), "role": "admin"},
        callback=True,
    )
    assert ack["message"]["sender"]["id"] == str(alice.id) and ack["message"]["from"] == str(alice.id)
    status = client.emit("update_status", {"status": "busy", "userId": admin.id}, callback=True)
    assert status["userId"] == str(alice.id)


def test_forged_tokens_are_refused_whatever_their_algorithm(app, alice):
    """alg none, another HMAC, an RSA signature, another key: all INVALID_TOKEN; identity never from claims alone."""
    import base64
    import json
    import time
    import warnings

    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.conftest import TEST_SECRET

    now = int(time.time())
    claims = {"sub": str(alice.id), "type": "access", "jti": "forged", "iat": now, "nbf": now, "exp": now + 600,
              "fresh": False, "userId": str(alice.id), "role": "admin"}

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    unsigned = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode()) + "."
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT warns that the test key is short for HS512: it is forged anyway
        hs512 = pyjwt.encode(claims, TEST_SECRET, algorithm="HS512")
    forged = {
        "none": unsigned,
        "HS512 with the right key": hs512,
        "RS256": pyjwt.encode(claims, private_key, algorithm="RS256"),
        "HS256 with another key": pyjwt.encode(claims, "another-secret-" + "y" * 40, algorithm="HS256"),
    }
    for name, token in forged.items():
        assert refusal(app, {"token": token})["data"]["code"] == "INVALID_TOKEN", name
    # The right algorithm and key are accepted (the claims above are otherwise valid).
    accepted = pyjwt.encode(claims, TEST_SECRET, algorithm="HS256")
    test_client = socketio.test_client(app, auth={"token": accepted})
    welcome = [p["args"][0] for p in test_client.get_received() if p["name"] == "connected"][0]
    assert welcome["user"]["role"] == "user"  # the role claim is informative; the database decides
