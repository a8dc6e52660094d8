"""Token attacks: forged algorithms and keys, refresh tokens as access tokens, expiry at connect and
during a connection, logout and ban closing live sockets (on every instance), and tokens or session
ids leaking into the log."""
from __future__ import annotations

import base64
import json
import threading
import time
import uuid
import warnings

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.security.attack import WAIT, Control, Probe, serving, unique_name
from tests.support import services
from tests.support.cluster import start_cluster

pytestmark = pytest.mark.live

PASSWORD = "correct-horse-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"NEXUS_LOGIN_RATE_LIMIT": "200 per minute"}
    with serving(tmp_path_factory.mktemp("tokens"), env, {"root": {"role": "admin"}}) as running:
        yield running


# -- minting tokens -----------------------------------------------------------------------------


def claims_of(server, username: str, **changes) -> dict:
    """The claim set Nexus puts in its access tokens (copied from a real one), fresh times and id."""
    claims = jwt.decode(server.seeder.token(username), options={"verify_signature": False})
    now = int(time.time())
    claims.update(iat=now, nbf=now, exp=now + 600, jti=str(uuid.uuid4()))
    claims.update(changes)
    return claims


def mint(server, username: str, *, key: str | None = None, algorithm: str = "HS256", **changes) -> str:
    return jwt.encode(claims_of(server, username, **changes), key or server.secret, algorithm=algorithm)


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def forged(server, kind: str, victim: str) -> str:
    claims = claims_of(server, victim)
    real = mint(server, victim)
    header, _payload, signature = real.split(".")
    if kind == "alg-none":
        return b64({"alg": "none", "typ": "JWT"}) + "." + b64(claims) + "."
    if kind == "alg-None-with-signature":
        return b64({"alg": "None", "typ": "JWT"}) + "." + b64(claims) + "." + signature
    if kind == "hs512-same-secret":
        with warnings.catch_warnings():  # PyJWT finds the key short for SHA-512; it is the server's
            warnings.simplefilter("ignore")
            return jwt.encode(claims, server.secret, algorithm="HS512")
    if kind == "rs256-own-key":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return jwt.encode(claims, key, algorithm="RS256")
    if kind == "hs256-another-key":
        return jwt.encode(claims, "another-secret-" + "k" * 40, algorithm="HS256")
    if kind == "payload-swapped-to-admin":
        admin = claims_of(server, "root")
        return header + "." + b64({**admin, "jti": claims["jti"]}) + "." + signature
    if kind == "signature-stripped":
        return header + "." + real.split(".")[1] + "."
    if kind == "garbage":
        return "not-a-jwt"
    if kind == "oversized":
        return real + "A" * 5000
    raise ValueError(kind)


FORGERIES = [
    "alg-none",
    "alg-None-with-signature",
    "hs512-same-secret",
    "rs256-own-key",
    "hs256-another-key",
    "payload-swapped-to-admin",
    "signature-stripped",
    "garbage",
    "oversized",
]


def login(server, username: str) -> dict:
    answer = requests.post(server.url + "/api/auth/login", json={"username": username, "password": PASSWORD},
                           timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()


def me(server, token: str) -> requests.Response:
    return requests.get(server.url + "/api/auth/me", headers={"Authorization": "Bearer " + token}, timeout=5)


def error_code(response: requests.Response) -> str:
    return response.json()["error"]["code"]


# -- forged and wrong tokens ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", FORGERIES)
def test_forged_tokens_are_refused_everywhere(server, control, probes, kind):
    victim = unique_name("victim")
    server.seeder.user(victim)
    token = forged(server, kind, victim)

    assert probes().refused_with(server.url, token)["code"] == "INVALID_TOKEN"
    assert probes().refused_with(server.url + "?token=" + token, None)["code"] == "INVALID_TOKEN"
    assert probes("/admin").refused_with(server.url, token)["code"] == "INVALID_TOKEN"

    # A guest cannot upgrade itself with it.
    guest = probes().connect(server.url)
    upgrade = guest.call("authenticate", token)
    assert upgrade["success"] is False and upgrade["error"]["code"] == "INVALID_TOKEN"
    assert guest.call("send_message", {"to": 1, "content": "hi"})["error"]["code"] == "FORBIDDEN"

    rest = me(server, token)
    assert rest.status_code == 401 and error_code(rest) == "INVALID_TOKEN"
    control.assert_unharmed()


def test_a_refresh_token_is_never_an_access_token(server, control, probes):
    name = unique_name("fresh")
    server.seeder.user(name)
    refresh = login(server, name)["refreshToken"]

    assert probes().refused_with(server.url, refresh)["code"] == "INVALID_TOKEN"
    assert probes().refused_with(server.url + "?token=" + refresh, None)["code"] == "INVALID_TOKEN"
    guest = probes().connect(server.url)
    assert guest.call("authenticate", refresh)["error"]["code"] == "INVALID_TOKEN"
    rest = me(server, refresh)
    assert rest.status_code in (401, 422) and rest.json()["success"] is False
    # And an access token is not a refresh token.
    access = login(server, name)["accessToken"]
    renewed = requests.post(server.url + "/api/auth/refresh", headers={"Authorization": "Bearer " + access},
                            timeout=5)
    assert renewed.status_code in (401, 422) and renewed.json()["success"] is False
    control.assert_unharmed()


def test_an_expired_token_is_refused_at_connect_with_token_expired(server, control, probes):
    name = unique_name("late")
    server.seeder.user(name)
    expired = mint(server, name, exp=int(time.time()) - 5)
    assert probes().refused_with(server.url, expired)["code"] == "TOKEN_EXPIRED"
    assert probes().refused_with(server.url + "?token=" + expired, None)["code"] == "TOKEN_EXPIRED"
    guest = probes().connect(server.url)
    assert guest.call("authenticate", expired)["error"]["code"] == "TOKEN_EXPIRED"
    rest = me(server, expired)
    assert rest.status_code == 401 and error_code(rest) == "TOKEN_EXPIRED"
    control.assert_unharmed()


def test_a_token_that_expires_during_the_connection_stops_privileged_events(server, control, connect_user, probes):
    name = unique_name("brief")
    server.seeder.user(name)
    room = unique_name("room")
    watcher = connect_user("watcher")
    assert watcher.sio.call("join_room", room, timeout=WAIT)["success"]

    expires = int(time.time()) + 3
    user = probes().connect(server.url, mint(server, name, exp=expires))
    assert user.call("join_room", room)["success"] is True
    # Nothing announces the expiry: poll a cheap event until the server refuses it.
    deadline = time.monotonic() + (expires - time.time()) + 5
    while True:
        answer = user.call("get_online_users")
        if not answer["success"]:
            break
        assert time.monotonic() < deadline, "the expired token was still accepted"
        time.sleep(0.2)
    assert answer["error"]["code"] == "TOKEN_EXPIRED"
    assert time.time() >= expires

    sent = user.call("send_message", {"roomId": room, "content": "after expiry"})
    assert sent["success"] is False and sent["error"]["code"] == "TOKEN_EXPIRED"
    assert user.call("join_room", unique_name("other"))["error"]["code"] == "TOKEN_EXPIRED"
    assert user.call("ping")["success"] is True  # keeping alive is allowed
    assert user.sio.connected

    renewed = user.call("authenticate", server.seeder.token(name))
    assert renewed["success"] is True and renewed["user"]["username"] == name
    again = user.call("send_message", {"roomId": room, "content": "renewed"})
    assert again["success"] is True
    # The watcher got the message sent after renewing, and never the refused one.
    watcher.wait_for("room_message", lambda message: message["content"] == "renewed")
    assert [message["content"] for message in watcher.received("room_message")] == ["renewed"]
    control.assert_unharmed()


# -- logout and ban ------------------------------------------------------------------------------


def test_logout_closes_the_sockets_of_that_token_within_two_seconds(server, control, probes):
    name = unique_name("leaver")
    server.seeder.user(name)
    session = login(server, name)
    token, refresh = session["accessToken"], session["refreshToken"]
    other_token = login(server, name)["accessToken"]
    tabs = [probes().connect(server.url, token, transports=[transport]) for transport in ("websocket", "polling")]
    tabs.append(probes("/chat").connect(server.url, token))
    kept = probes().connect(server.url, other_token)
    for tab in (*tabs, kept):
        assert tab.sio.connected

    headers = {"Authorization": "Bearer " + token}
    answer = requests.post(server.url + "/api/auth/logout", headers=headers, json={"refreshToken": refresh},
                           timeout=5)
    assert answer.json() == {"success": True}
    logged_out = time.monotonic()
    for tab in tabs:
        assert tab.disconnected.wait(2), f"a socket of the logged-out token is still open ({tab.namespace})"
        assert tab.received("session_revoked") == [{"reason": "logged out"}]
    assert time.monotonic() - logged_out < 2.5

    # The token and its refresh token are dead; the other login of the same user is not.
    assert probes().refused_with(server.url, token)["code"] == "TOKEN_REVOKED"
    assert error_code(me(server, token)) == "TOKEN_REVOKED"
    renewed = requests.post(server.url + "/api/auth/refresh", headers={"Authorization": "Bearer " + refresh},
                            timeout=5)
    assert renewed.status_code == 401 and error_code(renewed) == "TOKEN_REVOKED"
    assert kept.sio.connected and kept.call("ping")["success"] is True
    assert kept.received("session_revoked") == []
    control.assert_unharmed()


def test_a_ban_closes_every_socket_of_the_user_and_their_tokens_stop_working(server, control, probes):
    name = unique_name("banned")
    victim = server.seeder.user(name)
    token = server.seeder.token(name)
    sockets = [probes().connect(server.url, token), probes("/chat").connect(server.url, token),
               probes().connect(server.url, token, transports=["polling"])]
    admin = probes("/admin").connect(server.url, server.seeder.token("root"))

    banned = admin.call("ban_user", {"userId": victim["id"]})
    assert banned["success"] is True and banned["user"]["role"] == "banned"
    for socket in sockets:
        assert socket.disconnected.wait(2), "a banned user's socket is still open"
        assert socket.received("session_revoked") == [{"reason": "banned"}]

    assert probes().refused_with(server.url, token)["code"] == "USER_BANNED"
    assert me(server, token).status_code == 403 and error_code(me(server, token)) == "USER_BANNED"
    relogin = requests.post(server.url + "/api/auth/login", json={"username": name, "password": PASSWORD},
                            timeout=5)
    assert relogin.status_code in (401, 403) and relogin.json()["success"] is False
    guest = probes().connect(server.url)
    assert guest.call("authenticate", token)["error"]["code"] == "USER_BANNED"
    assert admin.sio.connected
    control.assert_unharmed()


@pytest.mark.redis
def test_logout_and_ban_close_sockets_on_every_instance(live_server):
    services.require("redis")
    channel = f"nexus-test-{uuid.uuid4().hex}"
    cluster = start_cluster(live_server, {"MESSAGE_QUEUE_URL": services.REDIS_URL, "SOCKETIO_REDIS_PREFIX": channel})
    cluster.a.seeder = cluster.b.seeder = cluster.seeder
    made: list[Probe] = []

    def probe(namespace: str = "/") -> Probe:
        made.append(Probe(namespace))
        return made[-1]

    control = Control(cluster.b)
    try:
        token = login(cluster.a, "alice")["accessToken"]
        on_a, on_b = probe().connect(cluster.a.url, token), probe().connect(cluster.b.url, token)
        bob_token = cluster.token("bob")
        bob_on_b = probe().connect(cluster.b.url, bob_token)
        admin = probe("/admin").connect(cluster.a.url, cluster.token("root"))

        assert requests.post(cluster.a.url + "/api/auth/logout", headers={"Authorization": "Bearer " + token},
                             timeout=5).json() == {"success": True}
        for socket in (on_a, on_b):
            assert socket.disconnected.wait(2), "logout did not close the socket on every instance"
            assert socket.received("session_revoked") == [{"reason": "logged out"}]
        assert probe().refused_with(cluster.b.url, token)["code"] == "TOKEN_REVOKED"

        bob_id = bob_on_b.wait_for("connected")["user"]["id"]
        assert admin.call("ban_user", {"userId": bob_id})["success"] is True
        assert bob_on_b.disconnected.wait(2), "a ban on A did not close bob's socket on B"
        assert bob_on_b.received("session_revoked") == [{"reason": "banned"}]
        assert probe().refused_with(cluster.b.url, bob_token)["code"] == "USER_BANNED"
        control.assert_unharmed()
    finally:
        control.close()
        for item in made:
            item.close()
        import redis

        connection = redis.Redis.from_url(services.REDIS_URL)
        keys = list(connection.scan_iter(match=f"{channel}*"))
        if keys:
            connection.delete(*keys)


# -- logs ------------------------------------------------------------------------------------------


def exercise_every_token_path(server, username: str) -> dict:
    """Use tokens in every place a client may put them; the secrets that must stay out of the log."""
    session = login(server, username)
    token, refresh = session["accessToken"], session["refreshToken"]
    seeded = server.seeder.token(username)
    done: list[Probe] = []
    for transport in ("polling", "websocket"):
        by_query = Probe().connect(server.url + "?token=" + seeded, None, transports=[transport])
        assert by_query.call("ping")["success"] is True
        assert by_query.call("authenticate", token)["success"] is True
        done.append(by_query)
    by_auth = Probe().connect(server.url, token)
    by_auth.sio.emit("authenticate", {"token": seeded})
    assert by_auth.call("ping")["success"] is True
    done.append(by_auth)
    expired = mint(server, username, exp=int(time.time()) - 5)
    assert Probe().refused_with(server.url + "?token=" + expired, None)["code"] == "TOKEN_EXPIRED"
    assert me(server, token).status_code == 200
    requests.get(server.url + "/health?token=" + seeded, timeout=5)
    requests.get(server.url + "/api/auth/me?access_token=" + seeded, timeout=5)
    requests.post(server.url + "/api/auth/refresh", headers={"Authorization": "Bearer " + refresh}, timeout=5)
    sids = [probe.sio.eio.sid for probe in done]
    for probe in done:
        probe.close()
    requests.post(server.url + "/api/auth/logout", headers={"Authorization": "Bearer " + token},
                  json={"refreshToken": refresh}, timeout=5)
    return {"tokens": [seeded, token, refresh, expired], "sids": sids}


def assert_no_secret_in(log: str, secrets: list[str]) -> None:
    for secret in secrets:
        for part in (secret, *secret.split(".")[1:]):
            assert part not in log, f"a secret ({part[:12]}...) is in the server log"
    assert PASSWORD not in log


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """A server with the most verbose logging there is (protocol debugging, DEBUG level), after every
    token path was used on it, with the secrets used and the control client's check done."""
    env = {"LOG_LEVEL": "DEBUG", "DEBUG": "socketio:*,engineio:*"}
    with serving(tmp_path_factory.mktemp("noisy"), env, {"alice": {"password": PASSWORD}}) as running:
        control = Control(running)
        try:
            running.used = exercise_every_token_path(running, "alice")
            control.assert_unharmed()
            running.used["sids"].append(control.client.sio.eio.sid)
        finally:
            control.close()
        yield running


def test_tokens_never_reach_the_log_even_with_protocol_debugging(noisy):
    log = noisy.log()
    assert "Received packet" in log and "[redacted" in log  # debugging was on, and scrubbing was needed
    assert_no_secret_in(log, noisy.used["tokens"])


def test_session_ids_never_reach_the_log_even_with_protocol_debugging(noisy):
    # An Engine.IO session id is a bearer credential: a POST to /socket.io/?transport=polling&sid=<it>
    # sends events as that user, a GET reads what the server sends them.
    log = noisy.log()
    for sid in noisy.used["sids"]:
        lines = [line for line in log.splitlines() if sid in line]
        assert not lines, f"Engine.IO session id {sid} is in {len(lines)} log lines, e.g. {lines[0][:160]!r}"


def test_tokens_and_session_ids_stay_out_of_the_log_at_the_default_level(server, control):
    server.seeder.user("sessions", password=PASSWORD)
    used = exercise_every_token_path(server, "sessions")
    control.assert_unharmed()
    log = server.log()
    assert_no_secret_in(log, used["tokens"])
    for sid in used["sids"] + [control.client.sio.eio.sid]:
        assert sid not in log, "an Engine.IO session id (enough to take over a long-polling session) is logged"


def test_refused_connections_are_logged_with_their_code_only(server, control, probes):
    token = forged(server, "hs256-another-key", "root")
    assert probes().refused_with(server.url, token)["code"] == "INVALID_TOKEN"
    wait_until = time.monotonic() + 5
    while "code=INVALID_TOKEN" not in server.log():
        assert time.monotonic() < wait_until, "the refusal was not logged"
        threading.Event().wait(0.05)
    assert_no_secret_in(server.log(), [token])
    control.assert_unharmed()
