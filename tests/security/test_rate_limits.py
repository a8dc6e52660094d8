"""Flooding attacks: events over the allowance (per user, never per socket), guests by address,
forged X-Forwarded-For, two instances sharing the allowance through Redis, and HTTP floods."""
from __future__ import annotations

import contextlib
import uuid

import pytest
import requests
import socketio

from tests.security.attack import WAIT, Control, health, serving, unique_name
from tests.support import services
from tests.support.cluster import Client, start_cluster

pytestmark = pytest.mark.live

ALLOWANCE = 10  # cost units per window (the control client spends 6 per check)
WINDOW_MS = 60_000
LOGIN_LIMIT = 3
HTTP_LIMIT = 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {
        "SOCKETIO_RATE_LIMIT_MAX_REQUESTS": str(ALLOWANCE),
        "SOCKETIO_RATE_LIMIT_WINDOW_MS": str(WINDOW_MS),
        "NEXUS_LOGIN_RATE_LIMIT": f"{LOGIN_LIMIT} per minute",
        "NEXUS_TRUSTED_PROXIES": "0",
    }
    with serving(tmp_path_factory.mktemp("rate"), env) as running:
        yield running


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    """A server behind one trusted proxy hop: X-Forwarded-For names the client."""
    env = {
        "SOCKETIO_RATE_LIMIT_MAX_REQUESTS": str(ALLOWANCE),
        "SOCKETIO_RATE_LIMIT_WINDOW_MS": str(WINDOW_MS),
        "NEXUS_HTTP_RATE_LIMIT": f"{HTTP_LIMIT} per minute",
        "NEXUS_TRUSTED_PROXIES": "1",
    }
    with serving(tmp_path_factory.mktemp("proxied"), env) as running:
        yield running


def new_user(server) -> tuple[str, str]:
    name = unique_name("flood")
    server.seeder.user(name)
    return name, server.seeder.token(name)


def refused(ack) -> bool:
    return ack["success"] is False and ack["error"]["code"] == "RATE_LIMITED"


def guest(probes, server, forwarded_for: str | None):
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    probe = probes().connect(server.url, headers=headers)
    probe.wait_for("connected")
    return probe


def test_a_flood_over_several_sockets_shares_one_allowance_and_the_flooder_is_cut_off(server, control, probes):
    _, token = new_user(server)
    sockets = [probes().connect(server.url, token) for _ in range(3)]
    on_chat = probes("/chat").connect(server.url, token)
    # Another namespace spends from the same allowance: join_room costs 2.
    assert on_chat.call("join_room", "lobby")["success"] is True
    answers = [sockets[number % 3].call("ping") for number in range(ALLOWANCE)]
    granted = [ack for ack in answers if ack["success"]]
    assert len(granted) == ALLOWANCE - 2, answers
    for ack in answers[ALLOWANCE - 2:]:
        assert refused(ack), ack
        assert 0 < ack["error"]["details"]["retryAfterMs"] <= WINDOW_MS

    # One rate_limit_exceeded for the user in this window, on whichever socket hit the limit first.
    notices = [notice for probe in sockets for notice in probe.received("rate_limit_exceeded")]
    assert len(notices) == 1 and notices[0]["event"] == "ping" and notices[0]["retryAfterMs"] > 0
    # A reconnect does not reset the allowance.
    sockets[1].sio.disconnect()
    again = probes().connect(server.url, token)
    assert refused(again.call("ping"))

    # The socket that keeps going is disconnected; the others (refused, but quiet) stay.
    flooder = sockets[0]
    for _ in range(40):  # without acks: each refusal comes back as an `error` event
        if flooder.disconnected.is_set():
            break
        try:
            flooder.sio.emit("ping")
        except socketio.exceptions.BadNamespaceError:
            break
    assert flooder.disconnected.wait(5), "a socket that kept sending while refused was not disconnected"
    assert {error["code"] for error in flooder.received("error")} == {"RATE_LIMITED"}
    assert sockets[2].sio.connected and again.sio.connected
    assert refused(sockets[2].call("ping"))
    total = sum(len(probe.received("rate_limit_exceeded")) for probe in (*sockets, again, on_chat))
    assert total == 1, "one notice per window"
    control.assert_unharmed()


def test_costs_differ_by_event_and_refused_events_are_not_processed(server, control, connect_user):
    user = connect_user("cost")
    room = unique_name("room")
    assert user.sio.call("join_room", room, timeout=WAIT)["success"]  # 2
    first = user.sio.call("send_message", {"roomId": room, "content": "one"}, timeout=WAIT)  # 3
    second = user.sio.call("send_message", {"roomId": room, "content": "two"}, timeout=WAIT)  # 3
    assert first["success"] and second["success"]
    # 2 units left: a message (3) is refused, two pings (1 each) are not.
    third = user.sio.call("send_message", {"roomId": room, "content": "three"}, timeout=WAIT)
    assert refused(third)
    assert user.sio.call("ping", timeout=WAIT)["success"] is True
    assert user.sio.call("ping", timeout=WAIT)["success"] is True
    assert refused(user.sio.call("ping", timeout=WAIT))
    # The refused message was neither stored nor broadcast.
    history = requests.get(f"{server.url}/api/rooms/{room}/messages", timeout=5,
                           headers={"Authorization": "Bearer " + user.token}).json()
    assert [message["content"] for message in history["messages"]] == ["two", "one"]
    user.assert_count_stays("room_message", 2, window=0.3)
    control.assert_unharmed()


def test_unknown_events_count_against_the_allowance_too(server, control, probes):
    """A flood of events the server does not know is still a flood: limited, then cut off."""
    _, token = new_user(server)
    flooder = probes().connect(server.url, token)
    codes = []
    for number in range(ALLOWANCE + 15):
        if flooder.disconnected.is_set():
            break
        try:
            codes.append(flooder.sio.call(f"no_such_event_{number}", timeout=2)["error"]["code"])
        except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError):
            break
    assert "RATE_LIMITED" in codes, f"{len(codes)} unknown events, none refused: {set(codes)}"
    assert flooder.disconnected.wait(5), "a socket flooding unknown events was never cut off"
    control.assert_unharmed()


def test_guests_are_limited_by_address_and_a_forged_forwarded_for_does_not_help(server, control, probes):
    # No trusted proxy here: X-Forwarded-For is the client's own claim and is ignored.
    first = guest(probes, server, "198.51.100.1")
    second = guest(probes, server, "198.51.100.2")
    plain = guest(probes, server, None)
    for _ in range(ALLOWANCE):
        assert first.call("ping")["success"] is True
    assert refused(second.call("ping"))
    assert refused(plain.call("ping"))
    notices = first.received("rate_limit_exceeded") + second.received("rate_limit_exceeded") + plain.received(
        "rate_limit_exceeded"
    )
    assert len(notices) == 1
    control.assert_unharmed()


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_allowance(proxied, probes):
    control = Control(proxied)
    try:
        first = guest(probes, proxied, "198.51.100.1")
        second = guest(probes, proxied, "198.51.100.2")
        for _ in range(ALLOWANCE):
            assert first.call("ping")["success"] is True
        assert refused(first.call("ping"))
        assert second.call("ping")["success"] is True  # another client behind the proxy
        # The same client on a second socket shares its allowance.
        assert refused(guest(probes, proxied, "198.51.100.1").call("ping"))
        control.assert_unharmed()
    finally:
        control.close()


def test_login_flood_gets_429_with_retry_after_even_with_forged_forwarded_for(server, control):
    server.seeder.user("victim")

    def attempt(number: int) -> requests.Response:
        return requests.post(
            server.url + "/api/auth/login",
            json={"username": "victim", "password": f"guess-{number}"},
            headers={"X-Forwarded-For": f"203.0.113.{number}"},  # not believed: no trusted proxy
            timeout=5,
        )

    answers = [attempt(number) for number in range(LOGIN_LIMIT + 2)]
    assert [answer.status_code for answer in answers[:LOGIN_LIMIT]] == [401] * LOGIN_LIMIT
    for limited in answers[LOGIN_LIMIT:]:
        assert limited.status_code == 429
        assert limited.headers["Content-Type"].startswith("application/json")
        assert limited.json()["success"] is False and limited.json()["error"]["code"] == "RATE_LIMITED"
        assert 0 < int(limited.headers["Retry-After"]) <= 60
    # The right password does not get through either while limited.
    right = requests.post(server.url + "/api/auth/login", json={"username": "victim", "password": "correct-horse-1"},
                          timeout=5)
    assert right.status_code == 429
    # Health checks are never limited.
    assert all(health(server) == 200 for _ in range(30))
    control.assert_unharmed()


def test_http_requests_are_limited_per_forwarded_client_and_health_never(proxied):
    control = Control(proxied)
    try:
        name = unique_name("rest")
        proxied.seeder.user(name)
        headers = {"Authorization": "Bearer " + proxied.seeder.token(name)}

        def get(path: str, client: str) -> requests.Response:
            return requests.get(proxied.url + path, headers={**headers, "X-Forwarded-For": client}, timeout=5)

        statuses = [get("/api/users/online", "192.0.2.10").status_code for _ in range(HTTP_LIMIT + 1)]
        assert statuses[:HTTP_LIMIT] == [200] * HTTP_LIMIT
        limited = get("/api/users/online", "192.0.2.10")
        assert statuses[HTTP_LIMIT] == 429 and limited.status_code == 429
        assert limited.json()["error"]["code"] == "RATE_LIMITED" and int(limited.headers["Retry-After"]) > 0
        assert get("/api/users/online", "192.0.2.11").status_code == 200  # another client
        assert all(get("/health", "192.0.2.10").status_code == 200 for _ in range(HTTP_LIMIT + 5))
        control.assert_unharmed()
    finally:
        control.close()


@pytest.mark.redis
def test_two_instances_share_the_allowance_through_redis_and_reconnecting_does_not_reset_it(live_server):
    services.require("redis")
    channel = f"nexus-test-{uuid.uuid4().hex}"
    env = {
        "MESSAGE_QUEUE_URL": services.REDIS_URL,
        "SOCKETIO_REDIS_PREFIX": channel,
        "SOCKETIO_RATE_LIMIT_MAX_REQUESTS": "6",
        "SOCKETIO_RATE_LIMIT_WINDOW_MS": "60000",
    }
    cluster = start_cluster(live_server, env)
    cluster.b.seeder = cluster.seeder
    made: list[Client] = []
    try:
        # The control client (its own allowance of 6: join 2 + ping 1 + send 3) is on B.
        control = Control(cluster.b)
        made.append(control.client)
        on_a = Client("alice@A").connect(cluster.a.url, cluster.token("alice"))
        made.append(on_a)
        for _ in range(4):
            assert on_a.sio.call("ping", timeout=WAIT)["success"]
        on_a.sio.disconnect()
        # A new socket, on the other instance: the same user, the same (nearly spent) allowance.
        on_b = Client("alice@B").connect(cluster.b.url, cluster.token("alice"))
        made.append(on_b)
        assert on_b.sio.call("ping", timeout=WAIT)["success"]
        assert on_b.sio.call("ping", timeout=WAIT)["success"]
        over = on_b.sio.call("ping", timeout=WAIT)
        assert refused(over) and over["error"]["details"]["retryAfterMs"] > 0
        assert on_b.wait_for("rate_limit_exceeded")["event"] == "ping"
        assert refused(on_b.sio.call("ping", timeout=WAIT))
        on_b.assert_count_stays("rate_limit_exceeded", 1)
        # A third socket, back on A, is refused too.
        back = Client("alice@A2").connect(cluster.a.url, cluster.token("alice"))
        made.append(back)
        assert refused(back.sio.call("ping", timeout=WAIT))
        control.assert_unharmed()
    finally:
        for client in made:
            with contextlib.suppress(Exception):  # already closed
                client.sio.disconnect()
        import redis

        connection = redis.Redis.from_url(services.REDIS_URL)
        keys = list(connection.scan_iter(match=f"{channel}*"))
        if keys:
            connection.delete(*keys)
