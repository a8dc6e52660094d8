"""Outages of the database and of Redis: told apart from bugs, answered UNAVAILABLE / 503 with a retry
hint on sockets, REST, the dashboard and readiness, logged once when they start and once when they end;
the rate limits count in memory while Redis is down."""
from __future__ import annotations

import logging
import sqlite3
import threading
import time

import psycopg
import pytest
import redis
from sqlalchemy import exc as sa_exc

from nexus import outages
from nexus.extensions import socketio
from nexus.outages import DATABASE, REDIS, Outages, dependency_of
from tests.support import services


def operational(orig: BaseException) -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, orig)


def database_down() -> sa_exc.OperationalError:
    return operational(psycopg.OperationalError("connection failed: Connection refused"))


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the bound"
        time.sleep(0.01)


@pytest.fixture
def fast_probes(monkeypatch):
    monkeypatch.setattr(outages, "PROBE_EVERY_S", 0.01)
    monkeypatch.setattr(outages, "SETTLE_S", 0.5)


@pytest.fixture
def probe_fails(app, monkeypatch):
    """The app's tracker sees the database as down until the test ends (its own SQLite answers)."""

    def down() -> None:
        raise database_down()

    monkeypatch.setitem(app.extensions["nexus.outages"].probes, DATABASE, down)


def outage_lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "nexus.outages"]


# -- telling outages from bugs ---------------------------------------------------------------


@pytest.mark.parametrize(
    "error, dependency",
    [
        (database_down(), DATABASE),
        (operational(psycopg.errors.AdminShutdown("terminating connection due to administrator command")), DATABASE),
        (sa_exc.InterfaceError("SELECT 1", {}, psycopg.InterfaceError("the connection is closed")), DATABASE),
        (sa_exc.DisconnectionError("gone"), DATABASE),
        (sa_exc.TimeoutError("QueuePool limit of size 10 overflow 20 reached"), DATABASE),
        (operational(sqlite3.OperationalError("database is locked")), DATABASE),
        (operational(sqlite3.OperationalError("no such table: messages")), None),
        (sa_exc.ProgrammingError("SELECT", {}, psycopg.errors.UndefinedTable("relation does not exist")), None),
        (sa_exc.IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation("duplicate key")), None),
        (psycopg.OperationalError("server closed the connection unexpectedly"), DATABASE),
        (redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."), REDIS),
        (redis.exceptions.TimeoutError("Timeout reading from socket"), REDIS),
        (redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"), REDIS),
        (redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), None),
        (ValueError("a bug"), None),
        (KeyError("user"), None),
    ],
)
def test_outages_are_told_apart_from_bugs(error, dependency):
    assert dependency_of(error) == dependency


def test_an_outage_raised_under_another_exception_is_still_an_outage():
    try:
        try:
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        except redis.exceptions.ConnectionError as cause:
            raise RuntimeError("presence update failed") from cause
    except RuntimeError as wrapped:
        assert dependency_of(wrapped) == REDIS


def test_unavailable_carries_the_retry_hint_beside_the_code_and_in_details():
    error = outages.unavailable(DATABASE).to_dict()
    assert error["code"] == "UNAVAILABLE" and error["retryAfterMs"] == outages.RETRY_AFTER_MS
    assert error["details"] == {"retryAfterMs": outages.RETRY_AFTER_MS}
    assert outages.retry_after_header(outages.unavailable(REDIS)) == {"Retry-After": "2"}


# -- one line when an outage starts, one when it ends ---------------------------------------


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(fast_probes, caplog):
    caplog.set_level(logging.INFO, logger="nexus.outages")
    up = threading.Event()

    def probe() -> None:
        if not up.is_set():
            raise redis.exceptions.ConnectionError("refused")

    tracker = Outages({REDIS: probe})
    for _ in range(50):
        refused = tracker.refuse(redis.exceptions.ConnectionError("Error 111 connecting. Connection refused."))
        assert refused.code == "UNAVAILABLE" and refused.retry_after_ms == outages.RETRY_AFTER_MS
    assert tracker.refuse(ValueError("a bug")) is None
    time.sleep(0.1)  # the watcher probes, in vain
    assert tracker.down() == [REDIS]
    assert outage_lines(caplog) == [
        "redis unavailable (ConnectionError: Error 111 connecting. Connection refused.); "
        "answering UNAVAILABLE until it is back"
    ]
    up.set()
    wait_until(lambda: not tracker.down())
    lines = outage_lines(caplog)
    assert len(lines) == 2 and lines[1].startswith("redis available again after ")
    assert "(50 requests answered UNAVAILABLE meanwhile)" in lines[1]
    assert not [record for record in caplog.records if record.exc_info]


def test_failures_just_after_the_return_are_not_a_new_outage_unless_they_last(fast_probes, caplog):
    caplog.set_level(logging.INFO, logger="nexus.outages")
    up = threading.Event()
    up.set()

    def probe() -> None:
        if not up.is_set():
            raise psycopg.OperationalError("refused")

    tracker = Outages({DATABASE: probe})
    tracker.report(DATABASE, database_down())
    wait_until(lambda: not tracker.down())
    # A request that was under way when the database came back fails a moment later: no new outage.
    tracker.report(DATABASE, database_down())
    wait_until(lambda: not tracker.down())
    assert len(outage_lines(caplog)) == 2
    # The database goes away again and stays away: that one is logged, once it outlasts the settling.
    time.sleep(outages.SETTLE_S)
    up.clear()
    tracker.report(DATABASE, database_down())
    tracker.report(DATABASE, database_down())
    wait_until(lambda: len(outage_lines(caplog)) == 3)
    up.set()
    wait_until(lambda: len(outage_lines(caplog)) == 4)
    assert outage_lines(caplog)[3].startswith("database available again")


# -- sockets ---------------------------------------------------------------------------------


@pytest.fixture
def chatter(app, make_user, token_for, socket_client):
    user = make_user("alice")
    client = socket_client(token=token_for(user))
    assert client.emit("join_room", "lobby", callback=True)["success"]
    return client


def test_a_message_sent_while_the_database_is_down_is_refused_unavailable(app, chatter, monkeypatch, caplog,
                                                                         probe_fails):
    from nexus.services import messages

    caplog.set_level(logging.INFO)

    def down(*args, **kwargs):
        raise database_down()

    monkeypatch.setattr(messages, "send_to_room", down)
    ack = chatter.emit("send_message", {"roomId": "lobby", "content": "hi", "clientMsgId": "c-1"}, callback=True)
    assert ack["success"] is False
    assert ack["error"]["code"] == "UNAVAILABLE"
    assert ack["error"]["retryAfterMs"] == ack["error"]["details"]["retryAfterMs"] == outages.RETRY_AFTER_MS
    # Without an ack callback the refusal comes as an `error` event, with the same hint.
    chatter.get_received()
    chatter.emit("send_message", {"roomId": "lobby", "content": "hi", "clientMsgId": "c-2"})
    [error] = [item["args"][0] for item in chatter.get_received() if item["name"] == "error"]
    assert error["code"] == "UNAVAILABLE" and error["retryAfterMs"] > 0 and error["event"] == "send_message"
    assert app.extensions["nexus.outages"].down() == [DATABASE]
    assert not [record for record in caplog.records if record.exc_info or "internal error" in record.getMessage()]


def test_a_bug_is_still_an_internal_error_with_a_reference(app, chatter, monkeypatch, caplog):
    from nexus.services import messages

    def bug(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(messages, "send_to_room", bug)
    ack = chatter.emit("send_message", {"roomId": "lobby", "content": "hi"}, callback=True)
    assert ack["error"]["code"] == "INTERNAL_ERROR" and ack["error"]["details"]["reference"]
    assert "retryAfterMs" not in ack["error"]
    assert app.extensions["nexus.outages"].down() == []


def test_a_connection_while_the_database_is_down_is_refused_unavailable(app, make_user, token_for, monkeypatch):
    from nexus.services import tokens

    token = token_for(make_user("bob"))
    sent = []
    client = socketio.test_client(app, auth={"token": token})
    client.disconnect()
    server = socketio.server
    original = server._send_packet
    monkeypatch.setattr(server, "_send_packet", lambda eio_sid, pkt: (sent.append(pkt), original(eio_sid, pkt)))

    def down(*args, **kwargs):
        raise database_down()

    monkeypatch.setattr(tokens, "_account", down)
    tokens.identity_cache(app).clear()  # the first connection's token is read again
    client.connect(auth={"token": token})
    assert not client.is_connected()
    [refusal] = [pkt.data for pkt in sent if pkt.packet_type == 4]  # CONNECT_ERROR
    assert refusal["data"]["code"] == "UNAVAILABLE" and refusal["data"]["retryAfterMs"] > 0


def test_a_token_this_instance_verified_is_refused_unavailable_while_the_database_is_down(app, make_user, token_for,
                                                                                         probe_fails):
    token = token_for(make_user("bob"))
    client = socketio.test_client(app, auth={"token": token})  # verified and kept by this instance
    client.disconnect()
    app.extensions["nexus.outages"].report(DATABASE, database_down())
    sent = []
    server = socketio.server
    original = server._send_packet
    server._send_packet = lambda eio_sid, pkt: (sent.append(pkt), original(eio_sid, pkt))
    try:
        client.connect(auth={"token": token})
    finally:
        server._send_packet = original
    assert not client.is_connected()  # its welcome could not be read
    [refusal] = [pkt.data for pkt in sent if pkt.packet_type == 4]  # CONNECT_ERROR
    assert refusal["data"]["code"] == "UNAVAILABLE" and refusal["data"]["retryAfterMs"] > 0


# -- REST, the dashboard and readiness -------------------------------------------------------


def test_rest_answers_503_with_retry_after_while_the_database_is_down(app, client, make_user, token_for,
                                                                     monkeypatch, caplog, probe_fails):
    from nexus.services import rooms

    caplog.set_level(logging.INFO)
    headers = {"Authorization": "Bearer " + token_for(make_user("carol"))}

    def down(*args, **kwargs):
        raise database_down()

    monkeypatch.setattr(rooms, "visible_rooms", down)
    for _ in range(5):
        response = client.get("/api/rooms", headers=headers)
        assert response.status_code == 503 and response.headers["Retry-After"] == "2"
        body = response.get_json()
        assert body["success"] is False and body["error"]["code"] == "UNAVAILABLE"
        assert body["error"]["retryAfterMs"] == outages.RETRY_AFTER_MS
    assert len([line for line in outage_lines(caplog) if line.startswith("database unavailable")]) == 1
    assert not [record for record in caplog.records if record.exc_info]

    monkeypatch.setattr(rooms, "visible_rooms", lambda *args, **kwargs: 1 / 0)
    response = client.get("/api/rooms", headers=headers)
    assert response.status_code == 500 and response.get_json()["error"]["code"] == "INTERNAL_ERROR"
    assert response.get_json()["error"]["details"]["reference"]


def test_the_dashboard_shows_a_503_page_while_the_database_is_down(app, client, make_user, monkeypatch):
    from nexus.dashboard import views
    from tests.dashboard.test_views import sign_in

    assert sign_in(client, make_user("root", role="admin")).status_code == 302

    def down(*args, **kwargs):
        raise database_down()

    monkeypatch.setattr(views, "_signed_in_admin", down)
    page = client.get("/dashboard/users")
    assert page.status_code == 503 and page.headers["Retry-After"] == "2"
    assert page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert "UNAVAILABLE" in text and "Temporarily unavailable" in text
    token = client.post("/dashboard/socket-token")
    assert token.status_code == 503 and token.get_json()["error"]["code"] == "UNAVAILABLE"


def test_readiness_says_unavailable_with_retry_after_and_logs_the_outage_once(app, client, monkeypatch, caplog,
                                                                            probe_fails):
    from nexus.api import health

    caplog.set_level(logging.INFO)

    def down() -> dict:
        raise database_down()

    monkeypatch.setattr(health, "_database", down)
    for _ in range(3):
        response = client.get("/health/ready")
        assert response.status_code == 503 and response.headers["Retry-After"] == "2"
        assert response.get_json()["failing"] == ["database"]
    assert client.get("/health").status_code == 200
    assert len([line for line in outage_lines(caplog) if line.startswith("database unavailable")]) == 1
    assert not [record for record in caplog.records if record.name == "nexus.health"]


# -- rate limits while Redis is down ---------------------------------------------------------


def dead_redis_url() -> str:
    return f"redis://127.0.0.1:{services.free_port()}/0"


def test_the_event_limiter_counts_in_memory_while_redis_is_down(config_factory, caplog):
    from limits.storage import MemoryStorage
    from limits.strategies import SlidingWindowCounterRateLimiter

    from nexus.services.ratelimit import EventLimiter

    caplog.set_level(logging.INFO)
    tracker = Outages({})
    limiter = EventLimiter(config_factory(redis_url=dead_redis_url(), rate_limit_max_requests=5), outages=tracker)
    verdicts = [limiter.check("u:1", "sid-1", 1).allowed for _ in range(7)]
    assert verdicts == [True] * 5 + [False] * 2, "the limit holds per process while Redis is down"
    assert limiter.check("u:2", "sid-2", 1).allowed
    assert tracker.down() == [REDIS]
    assert len(outage_lines(caplog)) == 1
    assert not [record for record in caplog.records if record.name == "nexus.ratelimit"]
    # Redis answers again: the next check after the retry delay goes back to the shared counters.
    limiter.shared = SlidingWindowCounterRateLimiter(MemoryStorage())
    limiter._retry_shared_at = 0.0
    assert limiter.check("u:1", "sid-1", 1).allowed
    assert limiter.strategy is limiter.shared


def test_http_limits_count_in_memory_while_redis_is_down(app_factory, caplog):
    from nexus.services.users import create_user

    caplog.set_level(logging.INFO)
    app = app_factory(redis_url=dead_redis_url(), login_rate_limit="3 per minute")
    with app.app_context():
        create_user("dora", "correct-horse-1")
    client = app.test_client()
    answers = [client.post("/api/auth/login", json={"username": "dora", "password": "wrong-one"}).status_code
               for _ in range(4)]
    assert answers == [401, 401, 401, 429]
    assert app.extensions["nexus.outages"].down() == [REDIS]
    with app.app_context():
        from nexus.services.tokens import issue_access_token
        from nexus.services.users import find_by_username

        token = issue_access_token(find_by_username("dora"))
    online = client.get("/api/users/online", headers={"Authorization": "Bearer " + token})
    assert online.status_code == 503 and online.headers["Retry-After"] == "2"
    assert online.get_json()["error"]["code"] == "UNAVAILABLE"
    assert not [record for record in caplog.records if record.exc_info]
    assert not [record for record in caplog.records if record.name == "flask-limiter" and record.levelno >= logging.WARNING]
    assert [line for line in outage_lines(caplog) if line.startswith("redis unavailable")]
