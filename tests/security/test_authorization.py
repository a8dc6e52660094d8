"""Authorization attacks, checked on every event and not only at connect: forged identity fields in
payloads, guests reaching for private rooms, direct messages and /admin, non-members reading or
writing private rooms, users changing others' messages, non-admins using admin powers, and users
joining server-managed rooms to eavesdrop."""
from __future__ import annotations

import time

import pytest
import requests

from tests.security.attack import WAIT, serving, unique_name
from tests.support.cluster import assert_none_receive

pytestmark = pytest.mark.live

VAULT = "vault"  # private: alice owns it, bob is a member
PLAZA = "plaza"  # public


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    users = {
        "alice": {"department": "sales"},
        "bob": {"department": "sales"},
        "mallory": {"department": "engineering"},
        "root": {"role": "admin"},
    }
    with serving(tmp_path_factory.mktemp("authz"), {}, users) as running:
        seeder = running.seeder
        running.ids = {name: seeder.user(name)["id"] for name in users}
        alice = bearer(seeder.token("alice"))
        created = requests.post(running.url + "/api/rooms", json={"name": VAULT, "kind": "private"}, headers=alice,
                                timeout=5)
        assert created.status_code == 201, created.text
        added = requests.post(f"{running.url}/api/rooms/{VAULT}/members", json={"userId": running.ids["bob"]},
                              headers=alice, timeout=5)
        assert added.status_code == 201, added.text
        yield running


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + token}


def code(ack) -> str | None:
    return None if ack.get("success") else ack["error"]["code"]


@pytest.fixture
def cast(server, clients):
    """alice, bob, mallory and root connected (fresh sockets for each test)."""
    seeder = server.seeder
    made = {name: clients(name, server, seeder.token(name)) for name in ("alice", "bob", "mallory", "root")}
    for client in made.values():
        client.token = seeder.token(client.name)
    return made


def secret(cast, content: str) -> dict:
    """alice and bob join the vault; alice posts `content` there; bob receives it."""
    for name in ("alice", "bob"):
        assert cast[name].sio.call("join_room", VAULT, timeout=WAIT)["success"]
    sent = cast["alice"].sio.call("send_message", {"roomId": VAULT, "content": content}, timeout=WAIT)
    assert sent["success"] is True
    cast["bob"].wait_for("room_message", lambda message: message["content"] == content)
    return sent["message"]


def proof_of_delivery(cast, marker: str) -> None:
    """alice posts `marker` to the vault; bob's next room message is it: nothing else came between."""
    before = len(cast["bob"].received("room_message"))
    assert cast["alice"].sio.call("send_message", {"roomId": VAULT, "content": marker}, timeout=WAIT)["success"]
    cast["bob"].wait_for("room_message", lambda message: message["content"] == marker)
    assert [message["content"] for message in cast["bob"].received("room_message")[before:]] == [marker]


def test_identity_fields_in_payloads_are_ignored(server, control, cast, probes):
    alice, bob, root_id = cast["alice"], cast["bob"], server.ids["root"]
    for client in (alice, bob):
        assert client.sio.call("join_room", PLAZA, timeout=WAIT)["success"]
    forged = {
        "roomId": PLAZA, "content": "who am I", "userId": root_id, "from": str(root_id), "senderId": root_id,
        "sender": {"id": str(root_id), "username": "root"}, "role": "admin", "user": {"id": root_id},
    }
    sent = alice.sio.call("send_message", forged, timeout=WAIT)
    assert sent["success"] is True
    assert sent["message"]["from"] == str(alice.welcome["user"]["id"])
    assert sent["message"]["sender"]["username"] == "alice"
    delivered = bob.wait_for("room_message", lambda message: message["content"] == "who am I")
    assert delivered["from"] == str(server.ids["alice"]) and delivered["sender"]["username"] == "alice"
    history = requests.get(f"{server.url}/api/rooms/{PLAZA}/messages", headers=bearer(bob.token), timeout=5).json()
    stored = next(message for message in history["messages"] if message["content"] == "who am I")
    assert stored["from"] == str(server.ids["alice"])

    # Identity in the handshake or in `authenticate` without a real token makes nobody anybody.
    posing = probes().connect(server.url, auth={"userId": root_id, "role": "admin", "username": "root"})
    assert posing.wait_for("connected")["guest"] is True
    assert code(posing.call("authenticate", {"userId": root_id, "role": "admin"})) == "INVALID_TOKEN"
    assert probes("/admin").refused_with(server.url, auth={"userId": root_id, "role": "admin"})["code"] in (
        "UNAUTHORIZED", "FORBIDDEN")
    assert probes("/admin").refused_with(server.url, auth={"token": alice.token, "role": "admin"})["code"] == (
        "FORBIDDEN")
    # The profile cannot carry a role either.
    promoted = requests.patch(server.url + "/api/users/me", json={"role": "admin"}, headers=bearer(alice.token),
                              timeout=5)
    assert promoted.status_code == 400 and promoted.json()["error"]["code"] == "VALIDATION_ERROR"
    assert requests.get(server.url + "/api/auth/me", headers=bearer(alice.token), timeout=5).json()["user"][
        "role"] == "user"
    control.assert_unharmed()


def test_a_guest_cannot_reach_private_rooms_direct_messages_or_admin(server, control, cast, probes):
    secret(cast, "for members only")
    guest = probes().connect(server.url)
    guest.wait_for("connected")
    bob_id = server.ids["bob"]
    attempts = {
        "join private room": guest.call("join_room", VAULT),
        "join public room": guest.call("join_room", PLAZA),
        "send to private room": guest.call("send_message", {"roomId": VAULT, "content": "guest was here"}),
        "direct message": guest.call("send_message", {"to": bob_id, "content": "hello from a guest"}),
        "private history": guest.call("get_history", {"roomId": VAULT}),
        "direct history": guest.call("get_history", {"with": bob_id}),
        "private room info": guest.call("room_info", VAULT),
        "mark a room read": guest.call("mark_read", {"roomId": VAULT, "seq": 1}),
        "mark a conversation read": guest.call("mark_read", {"with": bob_id, "seq": 1}),
        "notification read": guest.call("notification_read", {"id": 1}),
        "typing in private room": guest.call("typing_start", VAULT),
    }
    for attempt, ack in attempts.items():
        assert ack["success"] is False, f"a guest could {attempt}: {ack}"
        # Typing is refused from the socket's rooms alone: "join first", whatever the room is.
        allowed = ("NOT_IN_ROOM",) if attempt.startswith("typing") else ("FORBIDDEN", "UNAUTHORIZED")
        assert code(ack) in allowed, f"{attempt}: {ack}"
    assert "for members only" not in str(guest.events)
    assert probes("/admin").refused_with(server.url)["code"] in ("UNAUTHORIZED", "FORBIDDEN")
    # A guest's handshake asking for a replay of the private room gets nothing of it.
    replay = probes().connect(server.url, auth={"since": {VAULT: 0}})
    replay.wait_for("connected")
    proof_of_delivery(cast, "after the guest")
    assert replay.received("room_message") == [] and guest.received("room_message") == []
    assert cast["bob"].received("new_message") == []
    control.assert_unharmed()


def test_a_non_member_cannot_read_or_write_a_private_room(server, control, cast, probes):
    first = secret(cast, "the vault combination")
    mallory = cast["mallory"]
    call = lambda event, data: mallory.sio.call(event, data, timeout=WAIT)
    attempts = {
        "join": call("join_room", VAULT),
        "send": call("send_message", {"roomId": VAULT, "content": "mallory was here"}),
        "history": call("get_history", {"roomId": VAULT, "after": 0}),
        "room info": call("room_info", VAULT),
        "typing": call("typing_start", VAULT),
        "mark read": call("mark_read", {"roomId": VAULT, "seq": first["seq"]}),
        "edit": call("edit_message", {"messageId": int(first["id"]), "content": "changed"}),
        "delete": call("delete_message", {"messageId": int(first["id"])}),
    }
    for attempt, ack in attempts.items():
        assert ack["success"] is False, f"a non-member could {attempt}: {ack}"
        # A message of a room one cannot read may also be "not found" (its existence is not told).
        allowed = ("FORBIDDEN", "NOT_FOUND") if attempt in ("edit", "delete") else ("FORBIDDEN",)
        if attempt == "typing":  # refused from the socket's rooms alone, telling nothing of the room
            allowed = ("NOT_IN_ROOM",)
        assert code(ack) in allowed, f"{attempt}: {ack}"
    assert "vault combination" not in str(attempts)

    headers = bearer(mallory.token)
    rest = {
        "messages": requests.get(f"{server.url}/api/rooms/{VAULT}/messages", headers=headers, timeout=5),
        "info": requests.get(f"{server.url}/api/rooms/{VAULT}", headers=headers, timeout=5),
        "add self": requests.post(f"{server.url}/api/rooms/{VAULT}/members", headers=headers,
                                  json={"userId": server.ids["mallory"]}, timeout=5),
        "remove bob": requests.delete(f"{server.url}/api/rooms/{VAULT}/members/{server.ids['bob']}",
                                      headers=headers, timeout=5),
    }
    for attempt, answer in rest.items():
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "FORBIDDEN", (attempt, answer.text)
    listed = requests.get(server.url + "/api/rooms", headers=headers, timeout=5).json()["rooms"]
    assert VAULT not in [room["name"] for room in listed]

    # Asking for a replay of the vault in the handshake replays nothing.
    replay = probes().connect(server.url, mallory.token, auth={"token": mallory.token, "since": {VAULT: 0}})
    replay.wait_for("connected")
    proof_of_delivery(cast, "after mallory")
    assert replay.received("room_message") == [] and mallory.received("room_message") == []
    # Nothing was stored or changed: the vault holds alice's messages only, unedited.
    history = cast["bob"].sio.call("get_history", {"roomId": VAULT}, timeout=WAIT)
    assert {message["sender"]["username"] for message in history["messages"]} == {"alice"}
    original = next(message for message in history["messages"] if message["id"] == first["id"])
    assert original["content"] == "the vault combination" and original["editedAt"] is None
    assert cast["bob"].received("message_updated") == [] and cast["bob"].received("message_deleted") == []
    control.assert_unharmed()


def test_a_user_cannot_edit_or_delete_another_users_message(server, control, cast):
    alice, mallory = cast["alice"], cast["mallory"]
    room = unique_name("pub")
    for client in (alice, mallory):
        assert client.sio.call("join_room", room, timeout=WAIT)["success"]
    sent = alice.sio.call("send_message", {"roomId": room, "content": "original words"}, timeout=WAIT)
    message_id = int(sent["messageId"])
    edit = mallory.sio.call("edit_message", {"messageId": message_id, "content": "forged words",
                                             "userId": server.ids["alice"]}, timeout=WAIT)
    delete = mallory.sio.call("delete_message", {"messageId": message_id, "userId": server.ids["alice"]},
                              timeout=WAIT)
    assert code(edit) == "FORBIDDEN" and code(delete) == "FORBIDDEN"
    assert_none_receive("message_updated", alice, mallory, window=0.3)
    assert alice.received("message_deleted") == []
    history = alice.sio.call("get_history", {"roomId": room}, timeout=WAIT)
    [kept] = history["messages"]
    assert kept["content"] == "original words" and kept["deleted"] is False and kept["editedAt"] is None
    # The sender can (the check is on the token's user, not refusing everyone).
    assert alice.sio.call("edit_message", {"messageId": message_id, "content": "own edit"}, timeout=WAIT)["success"]
    control.assert_unharmed()


def test_a_non_admin_cannot_use_admin_rest_or_the_admin_namespace(server, control, cast, probes):
    alice = cast["alice"]
    headers = bearer(alice.token)
    attempts = {
        "broadcast": requests.post(server.url + "/api/admin/broadcast", headers=headers,
                                   json={"kind": "system", "message": "pwned"}, timeout=5),
        "broadcasts": requests.get(server.url + "/api/admin/broadcasts", headers=headers, timeout=5),
        "actions": requests.get(server.url + "/api/admin/actions", headers=headers, timeout=5),
        "notify": requests.post(server.url + "/api/notifications", headers=headers,
                                json={"userId": server.ids["bob"], "title": "Reset", "message": "click here"},
                                timeout=5),
    }
    for attempt, answer in attempts.items():
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "FORBIDDEN", (attempt, answer.text)
    for path in ("/metrics", "/api/metrics", "/socket-status"):
        answer = requests.get(server.url + path, headers=headers, timeout=5)
        assert answer.status_code in (401, 403), (path, answer.status_code)
    bad_key = requests.post(server.url + "/api/admin/broadcast", headers={"X-API-Key": "k" * 40},
                            json={"kind": "system", "message": "pwned"}, timeout=5)
    assert bad_key.status_code == 401 and bad_key.json()["error"]["code"] == "INVALID_TOKEN"
    assert probes("/admin").refused_with(server.url, alice.token)["code"] == "FORBIDDEN"

    # Nothing was broadcast: an admin broadcast right after is the first system message anyone gets.
    admin = probes("/admin").connect(server.url, cast["root"].token)
    assert admin.call("broadcast", {"kind": "system", "message": "real one"})["success"] is True
    for client in (cast["bob"], control.client):
        client.wait_for("system_message", lambda data: "real one" in str(data))
        assert "pwned" not in str(client.received("system_message"))
    assert cast["bob"].received("notification") == []
    control.assert_unharmed()


def test_server_managed_rooms_cannot_be_joined_to_eavesdrop(server, control, cast, probes):
    mallory, root = cast["mallory"], cast["root"]
    for room in ("admins", "moderators", "all_users", f"user_{server.ids['bob']}", "department_sales",
                 "dm:1:2", "dm_1_2", "sid_anything"):
        ack = mallory.sio.call("join_room", room, timeout=WAIT)
        assert code(ack) in ("FORBIDDEN", "VALIDATION_ERROR"), (room, ack)
    # An admin message reaches the admins and not mallory.
    admin = probes("/admin").connect(server.url, root.token)
    assert admin.call("broadcast", {"kind": "admin", "message": "admins only"})["success"] is True
    root.wait_for("admin_message", lambda data: "admins only" in str(data))
    assert_none_receive("admin_message", mallory, window=0.3)
    assert_none_receive("department_message", mallory, window=0.1)
    control.assert_unharmed()


def test_another_sockets_own_room_cannot_be_joined(server, control, cast, probes):
    """Every socket is in a room named by its id, which carries its replies (pong, errors, replays).
    Joining it by name must be refused cleanly, never an internal error."""
    mallory = cast["mallory"]
    victim = None
    for _ in range(30):  # a socket id that passes the room-name syntax (not starting with '-', '_', 'dm')
        candidate = probes().connect(server.url, cast["bob"].token)
        sid = candidate.sio.get_sid()
        if sid[0].isalnum() and not sid.lower().startswith("dm"):
            victim = candidate
            break
        candidate.sio.disconnect()
    assert victim is not None
    ack = mallory.sio.call("join_room", sid, timeout=WAIT)
    assert ack["success"] is False and code(ack) in ("FORBIDDEN", "VALIDATION_ERROR"), ack
    victim.sio.emit("ping", {"timestamp": 4242})
    victim.wait_for("pong", lambda data: data.get("clientTimestamp") == 4242)
    deadline = time.monotonic() + 0.3
    mallory.assert_never_gets("pong", deadline)
    control.assert_unharmed()


def test_direct_messages_reach_only_their_two_users(server, control, cast):
    alice, bob, mallory = cast["alice"], cast["bob"], cast["mallory"]
    sent = alice.sio.call("send_message", {"to": server.ids["bob"], "content": "just between us"}, timeout=WAIT)
    assert sent["success"] is True
    bob.wait_for("new_message", lambda message: message["content"] == "just between us")
    assert_none_receive("new_message", mallory, window=0.3)
    # mallory's view of "the conversation with bob" is her own (empty), not alice's.
    page = mallory.sio.call("get_history", {"with": server.ids["bob"]}, timeout=WAIT)
    assert "just between us" not in str(page)
    rest = requests.get(f"{server.url}/api/conversations/{server.ids['bob']}/messages",
                        headers=bearer(mallory.token), timeout=5)
    assert "just between us" not in rest.text
    listed = requests.get(server.url + "/api/conversations", headers=bearer(mallory.token), timeout=5)
    assert listed.status_code == 200 and "just between us" not in listed.text
    control.assert_unharmed()
