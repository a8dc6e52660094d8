"""Four behaviours of the chat events with Flask-SocketIO's test client: what one sent is never unread for
one; `join_room {kind}` makes or refuses, never the opposite kind; sending takes a socket in the room;
`rate_limit_exceeded` carries a sentence. (tests/live/test_consistency.py: the same against a real server.)"""
from __future__ import annotations

import pytest


def received(test_client, name, namespace="/"):
    return [item["args"][0] for item in test_client.get_received(namespace) if item["name"] == name]


@pytest.fixture
def connect_to():
    """Flask-SocketIO test clients of an app built with app_factory; disconnected at the end."""
    from nexus.extensions import socketio

    made = []

    def connect(app, token, namespace="/"):
        made.append(socketio.test_client(app, namespace=namespace, auth={"token": token}))
        return made[-1]

    yield connect
    for test_client in made:
        if test_client.is_connected():
            test_client.disconnect()


def welcome(client):
    """The `connected` event a new connection got."""
    [connected] = received(client, "connected")
    return connected


def send(client, room, content, namespace="/"):
    return client.emit("send_message", {"roomId": room, "content": content, "type": "text"}, callback=True,
                       namespace=namespace)


def rest(client, token, method, path, **kwargs):
    response = client.open(path, method=method, headers={"Authorization": f"Bearer {token}"}, **kwargs)
    return response.status_code, response.get_json()


# -- unread counts -------------------------------------------------------------------------------


@pytest.mark.parametrize("group_commit_ms", [2, 0], ids=["group-commit", "one-transaction-each"])
def test_what_a_user_sent_is_never_unread_for_them(app_factory, connect_to, group_commit_ms):
    from nexus.extensions import db
    from nexus.services.users import create_user
    from nexus.services.tokens import issue_access_token

    app = app_factory(group_commit_ms=group_commit_ms)
    with app.app_context():
        alice, bob = create_user("alice", "correct-horse-1"), create_user("bob", "correct-horse-1")
        alice_id, bob_id = alice.id, bob.id
        tokens = {"alice": issue_access_token(alice), "bob": issue_access_token(bob)}
        db.session.commit()
    on_alice, on_bob = connect_to(app, tokens["alice"]), connect_to(app, tokens["bob"])
    for client in (on_alice, on_bob):
        assert client.emit("join_room", "general", callback=True)["success"]
    # seq 1, 2 by alice; 3 by bob; 4 by alice; 5, 6 by bob.
    for client, content in ((on_alice, "a1"), (on_alice, "a2"), (on_bob, "b1"), (on_alice, "a3"),
                            (on_bob, "b2"), (on_bob, "b3")):
        assert send(client, "general", content)["success"]
    # Direct messages: 1, 2 from alice to bob, 3 from bob to alice.
    for client, to, content in ((on_alice, bob_id, "psst"), (on_alice, bob_id, "psst again"),
                                (on_bob, alice_id, "yes?")):
        assert client.emit("send_message", {"to": to, "content": content}, callback=True)["success"]

    alice_sees = welcome(connect_to(app, tokens["alice"]))
    bob_sees = welcome(connect_to(app, tokens["bob"]))
    assert alice_sees["unread"] == {"general": 2}  # bob's b2 and b3, after her a3; never her own
    assert alice_sees["unreadDirect"] == {str(bob_id): 1}
    assert bob_sees["unread"] == {} and bob_sees["unreadDirect"] == {}  # he wrote last in both

    test_client = app.test_client()
    status, listing = rest(test_client, tokens["alice"], "GET", "/api/rooms")
    assert status == 200 and {room["name"]: room["unread"] for room in listing["rooms"]} == {"general": 2}
    status, listing = rest(test_client, tokens["bob"], "GET", "/api/rooms")
    assert {room["name"]: room["unread"] for room in listing["rooms"]} == {"general": 0}
    _, conversations = rest(test_client, tokens["alice"], "GET", "/api/conversations")
    assert [(c["with"]["username"], c["unread"], c["lastReadSeq"]) for c in conversations["conversations"]] == [
        ("bob", 1, 2)]
    _, conversations = rest(test_client, tokens["bob"], "GET", "/api/conversations")
    assert [(c["with"]["username"], c["unread"]) for c in conversations["conversations"]] == [("alice", 0)]


def test_a_note_to_oneself_is_never_unread(app, make_user, token_for, socket_client):
    alice = make_user("alice")
    client = socket_client(token=token_for(alice))
    assert client.emit("send_message", {"to": alice.id, "content": "remember the milk"}, callback=True)["success"]
    assert welcome(socket_client(token=token_for(alice)))["unreadDirect"] == {}


def test_a_read_marker_never_goes_back_after_sending(app, make_user, token_for, socket_client):
    alice, bob = make_user("alice"), make_user("bob")
    on_alice, on_bob = socket_client(token=token_for(alice)), socket_client(token=token_for(bob))
    for client in (on_alice, on_bob):
        client.emit("join_room", "general", callback=True)
    for content in ("one", "two"):
        send(on_bob, "general", content)
    assert send(on_alice, "general", "three")["message"]["seq"] == 3
    # An older mark_read (a client catching up on seq 1) leaves the marker at her own message.
    marked = on_alice.emit("mark_read", {"roomId": "general", "seq": 1}, callback=True)
    assert marked["success"] and marked["lastReadSeq"] == 3
    send(on_bob, "general", "four")
    assert welcome(socket_client(token=token_for(alice)))["unread"] == {"general": 1}
    marked = on_alice.emit("mark_read", {"roomId": "general", "seq": 4}, callback=True)
    assert marked["lastReadSeq"] == 4
    assert welcome(socket_client(token=token_for(alice)))["unread"] == {}


# -- join_room {kind} ----------------------------------------------------------------------------


def test_join_room_with_kind_private_makes_a_private_room_owned_by_the_caller(app, make_user, token_for,
                                                                               socket_client, client):
    alice, bob = make_user("alice"), make_user("bob")
    on_alice, on_bob = socket_client(token=token_for(alice)), socket_client(token=token_for(bob))
    joined = on_alice.emit("join_room", {"room": "plans", "kind": "private"}, callback=True)
    assert joined["success"] and joined["kind"] == "private" and joined["roomId"] == "plans"
    info = on_alice.emit("room_info", "plans", callback=True)["room"]
    assert info["kind"] == "private" and info["ownerId"] == str(alice.id)
    assert [(m["username"], m["memberRole"]) for m in info["members"]] == [("alice", "owner")]

    # Others cannot see it, join it or send to it until the owner adds them.
    refused = on_bob.emit("join_room", "plans", callback=True)
    assert refused["success"] is False and refused["error"]["code"] == "FORBIDDEN"
    assert send(on_bob, "plans", "let me in")["error"]["code"] == "FORBIDDEN"
    _, listing = rest(client, token_for(bob), "GET", "/api/rooms")
    assert "plans" not in {room["name"] for room in listing["rooms"]}
    status, _ = rest(client, token_for(alice), "POST", "/api/rooms/plans/members", json={"userId": bob.id})
    assert status in (200, 201)
    assert on_bob.emit("join_room", {"room": "plans", "kind": "private"}, callback=True)["kind"] == "private"


def test_join_room_never_joins_a_room_of_the_other_kind(app, make_user, token_for, socket_client):
    alice, bob = make_user("alice"), make_user("bob")
    on_alice, on_bob = socket_client(token=token_for(alice)), socket_client(token=token_for(bob))
    assert on_alice.emit("join_room", "general", callback=True)["kind"] == "public"
    refused = on_bob.emit("join_room", {"room": "general", "kind": "private"}, callback=True)
    assert refused["success"] is False and refused["error"]["code"] == "CONFLICT"
    assert refused["error"]["details"] == {"kind": "public"} and "public" in refused["error"]["message"]
    assert send(on_bob, "general", "am I in?")["error"]["code"] == "NOT_IN_ROOM"  # not joined

    assert on_alice.emit("join_room", {"room": "plans", "kind": "private"}, callback=True)["kind"] == "private"
    asked_public = on_alice.emit("join_room", {"room": "plans", "kind": "public"}, callback=True)
    assert asked_public["error"]["code"] == "CONFLICT" and asked_public["error"]["details"] == {"kind": "private"}
    # Without `kind`, or with the room's own, it is joined as before.
    assert on_bob.emit("join_room", {"room": "general", "kind": "public"}, callback=True)["success"]
    assert on_alice.emit("join_room", {"roomId": "plans"}, callback=True)["success"]


def test_join_room_kind_must_be_public_or_private(app, make_user, token_for, socket_client):
    on_alice = socket_client(token=token_for(make_user("alice")))
    for kind in ("direct", "secret", 1):
        refused = on_alice.emit("join_room", {"room": "odd", "kind": kind}, callback=True)
        assert refused["success"] is False and refused["error"]["code"] == "VALIDATION_ERROR", kind
    assert on_alice.emit("room_info", "odd", callback=True)["error"]["code"] == "ROOM_NOT_FOUND"  # nothing made


def test_without_auto_create_a_private_join_does_not_make_the_room(app_factory, connect_to):
    from nexus.services.tokens import issue_access_token
    from nexus.services.users import create_user

    app = app_factory(auto_create_rooms=False)
    with app.app_context():
        token = issue_access_token(create_user("alice", "correct-horse-1"))
    on_alice = connect_to(app, token)
    refused = on_alice.emit("join_room", {"room": "plans", "kind": "private"}, callback=True)
    assert refused["error"]["code"] == "ROOM_NOT_FOUND"


# -- sending takes a socket in the room ----------------------------------------------------------


def test_sending_to_a_room_the_socket_has_not_joined_is_refused_and_nothing_is_stored(app, make_user, token_for,
                                                                                      socket_client):
    alice, bob = make_user("alice"), make_user("bob")
    on_alice, on_bob = socket_client(token=token_for(alice)), socket_client(token=token_for(bob))
    assert on_bob.emit("join_room", "general", callback=True)["success"]
    refused = send(on_alice, "general", "drive-by")
    assert refused == {"success": False, "error": {
        "code": "NOT_IN_ROOM", "message": "Join 'general' (join_room) before sending to it.",
        "details": {"roomId": "general"}}}
    on_alice.emit("send_message", {"roomId": "general", "content": "no ack"})  # no ack asked: an error event
    assert received(on_alice, "error")[-1]["code"] == "NOT_IN_ROOM"
    assert received(on_bob, "room_message") == []
    history = on_bob.emit("get_history", {"roomId": "general"}, callback=True)
    assert history["messages"] == [] and history["lastSeq"] == 0

    # Joined, the sender's socket gets its message like every other member's.
    assert on_alice.emit("join_room", "general", callback=True)["success"]
    sent = send(on_alice, "general", "hello")
    assert sent["success"] and sent["message"]["seq"] == 1
    assert received(on_alice, "room_message") == [sent["message"]]
    assert received(on_bob, "room_message") == [sent["message"]]
    # Left, it is refused again.
    assert on_alice.emit("leave_room", "general", callback=True)["success"]
    assert send(on_alice, "general", "still here?")["error"]["code"] == "NOT_IN_ROOM"


def test_a_refused_send_says_why_when_joining_would_not_help(app, make_user, token_for, socket_client):
    alice, bob = make_user("alice"), make_user("bob")
    on_alice, on_bob = socket_client(token=token_for(alice)), socket_client(token=token_for(bob))
    assert send(on_alice, "nowhere", "hello?")["error"]["code"] == "ROOM_NOT_FOUND"
    on_bob.emit("join_room", {"room": "plans", "kind": "private"}, callback=True)
    assert send(on_alice, "plans", "hello?")["error"]["code"] == "FORBIDDEN"


def test_each_socket_and_namespace_joins_for_itself(app, make_user, token_for, socket_client):
    alice = make_user("alice")
    laptop = socket_client(token=token_for(alice))
    phone = socket_client(token=token_for(alice), namespace="/chat")
    assert laptop.emit("join_room", "general", callback=True)["success"]
    assert send(phone, "general", "from the phone", namespace="/chat")["error"]["code"] == "NOT_IN_ROOM"
    assert phone.emit("join_room", "general", callback=True, namespace="/chat")["success"]
    sent = send(phone, "general", "from the phone", namespace="/chat")
    assert received(phone, "room_message", "/chat") == [sent["message"]]
    assert received(laptop, "room_message") == [sent["message"]]


def test_a_renewed_token_keeps_the_socket_in_its_rooms(app, make_user, token_for, socket_client):
    alice = make_user("alice")
    client = socket_client(token=token_for(alice))
    assert client.emit("join_room", "general", callback=True)["success"]
    assert client.emit("authenticate", token_for(alice), callback=True)["success"]
    sent = send(client, "general", "still here")
    assert sent["success"] and received(client, "room_message") == [sent["message"]]


def test_another_identity_leaves_the_rooms(app, make_user, token_for, socket_client):
    alice, bob = make_user("alice"), make_user("bob")
    client = socket_client(token=token_for(alice))
    assert client.emit("join_room", "general", callback=True)["success"]
    assert client.emit("authenticate", token_for(bob), callback=True)["user"]["username"] == "bob"
    assert send(client, "general", "as bob")["error"]["code"] == "NOT_IN_ROOM"


# -- rate_limit_exceeded -------------------------------------------------------------------------


def test_rate_limit_exceeded_carries_a_sentence(app_factory, connect_to):
    from nexus.services.tokens import issue_access_token
    from nexus.services.users import create_user

    app = app_factory(rate_limit_max_requests=3, rate_limit_window_ms=60_000)
    with app.app_context():
        token = issue_access_token(create_user("alice", "correct-horse-1"))
    client = connect_to(app, token)
    answers = [client.emit("ping", callback=True) for _ in range(5)]
    assert [answer["success"] for answer in answers] == [True, True, True, False, False]
    [notice] = received(client, "rate_limit_exceeded")
    assert set(notice) == {"event", "retryAfterMs", "message"}
    assert notice["event"] == "ping" and 0 < notice["retryAfterMs"] <= 60_000
    seconds = -(-notice["retryAfterMs"] // 1000)
    assert notice["message"] == f"Too many requests, please slow down: try again in {seconds} s."
