"""The message queue's outbox: in order, bounded, backoff capped, status reported, resumes by itself.

The outbox is driven with a fake publish that fails as told; its worker runs in a real thread.
The managers' bounded publish attempts and the readiness endpoint that reports the queue are
checked here too (no broker needed: an unreachable port is enough).
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

import pytest

from nexus.realtime import queue
from nexus.realtime.queue import Outbox

WAIT_S = 10.0


class FakeBroker:
    """A publish function: fails while `down` (or for the next `fail_next` attempts), records the rest."""

    def __init__(self, fail_next: int = 0, *, down: bool = False):
        self.fail_next = fail_next
        self.down = down
        self.sent: list[Any] = []
        self.attempts: list[Any] = []
        self.attempt_times: list[float] = []
        self.on_attempt: Callable[[Any], None] | None = None
        self._lock = threading.Lock()

    def __call__(self, message: Any) -> None:
        with self._lock:
            self.attempts.append(message)
            self.attempt_times.append(time.monotonic())
        if self.on_attempt is not None:
            self.on_attempt(message)
        with self._lock:
            if self.down or self.fail_next > 0:
                self.fail_next = max(0, self.fail_next - 1)
                raise ConnectionError("broker down")
            self.sent.append(message)


class ManualSpawn:
    """Keeps the worker instead of starting it, so a test decides when it runs."""

    def __init__(self) -> None:
        self.targets: list[Callable[[], Any]] = []

    def __call__(self, target: Callable[[], Any]) -> str:
        self.targets.append(target)
        return "worker"

    def start(self) -> threading.Thread:
        assert len(self.targets) == 1, self.targets
        thread = threading.Thread(target=self.targets[0], daemon=True)
        thread.start()
        return thread


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


@pytest.fixture
def outboxes():
    made: list[Outbox] = []

    def make(send: Callable[[Any], None], **options: Any) -> Outbox:
        options.setdefault("min_delay", 0.01)
        options.setdefault("max_delay", 0.05)
        outbox = Outbox(send, **options)
        made.append(outbox)
        return outbox

    yield make
    for outbox in made:
        outbox.close()


def test_a_healthy_broker_gets_every_message_at_once_without_a_worker(outboxes):
    broker = FakeBroker()
    spawn = ManualSpawn()
    outbox = outboxes(broker, spawn=spawn)
    assert [outbox.put(n) for n in range(5)] == [True] * 5
    assert broker.sent == [0, 1, 2, 3, 4]
    assert spawn.targets == []  # nothing to retry, no worker
    assert outbox.status() == {"ok": True, "pending": 0, "since": None, "lastError": None, "dropped": 0}
    assert outbox.flush(0) is True


def test_failed_publishes_are_kept_in_order_and_sent_when_the_broker_is_back(outboxes, caplog):
    caplog.set_level(logging.INFO, logger="nexus.queue")
    broker = FakeBroker(down=True)
    outbox = outboxes(broker)
    assert outbox.put("m1") is False  # tried once, kept
    for message in ("m2", "m3", "m4"):
        assert outbox.put(message) is False  # queued behind m1 without being tried
    assert "m2" not in broker.attempts
    wait_until(lambda: len(broker.attempts) >= 3)  # the worker retries m1 only
    assert set(broker.attempts) == {"m1"}
    assert outbox.status()["pending"] == 4

    broker.down = False
    assert outbox.flush(WAIT_S) is True
    outbox.put("m5")
    assert broker.sent == ["m1", "m2", "m3", "m4", "m5"]
    assert outbox.status()["ok"] is True

    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]  # once per outage, however many retries
    assert "unreachable" in errors[0].getMessage() and "ConnectionError: broker down" in errors[0].getMessage()
    recovered = [r.getMessage() for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(recovered) == 1 and "sent 4 message(s) late" in recovered[0], recovered


def test_messages_put_while_a_publish_is_in_flight_wait_behind_it_and_never_block(outboxes):
    release = threading.Event()
    started = threading.Event()
    broker = FakeBroker()

    def slow_first(message: Any) -> None:
        if message == "slow":
            started.set()
            release.wait(WAIT_S)

    broker.on_attempt = slow_first
    outbox = outboxes(broker)
    first = threading.Thread(target=outbox.put, args=("slow",))
    first.start()
    assert started.wait(WAIT_S)
    began = time.monotonic()
    assert outbox.put("next") is False  # queued behind the one in flight ...
    assert time.monotonic() - began < 0.1  # ... at once, not waiting for it
    assert outbox.flush(0.05) is False
    release.set()
    first.join(WAIT_S)
    assert outbox.flush(WAIT_S) is True
    assert broker.sent == ["slow", "next"]


def test_the_outbox_is_bounded_and_drops_the_oldest_with_an_error(outboxes, caplog):
    caplog.set_level(logging.ERROR, logger="nexus.queue")
    broker = FakeBroker(down=True)
    spawn = ManualSpawn()
    outbox = outboxes(broker, spawn=spawn, capacity=3)
    for n in range(1, 8):
        outbox.put(n)
    status = outbox.status()
    assert status["pending"] == 3 and status["dropped"] == 4 and status["ok"] is False
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert dropped and "outbox is full (3 messages)" in dropped[0] and "dropped 1 " in dropped[0]

    broker.down = False
    spawn.start()
    assert outbox.flush(WAIT_S) is True
    assert broker.sent == [5, 6, 7]  # the newest, still in order
    assert outbox.status() == {"ok": True, "pending": 0, "since": None, "lastError": None, "dropped": 4}


def test_backoff_doubles_from_the_minimum_up_to_the_cap(outboxes):
    broker = FakeBroker(fail_next=7)
    outbox = outboxes(broker, min_delay=0.01, max_delay=0.04)
    delays_seen: list[float] = []
    broker.on_attempt = lambda _message: delays_seen.append(outbox.delay)
    outbox.put("only")
    assert outbox.flush(WAIT_S) is True
    assert broker.sent == ["only"] and len(broker.attempts) == 8
    # The first attempt is the direct one; each failure doubles the wait, capped.
    assert delays_seen == [0.0, 0.01, 0.02, 0.04, 0.04, 0.04, 0.04, 0.04]
    gaps = [b - a for a, b in zip(broker.attempt_times, broker.attempt_times[1:])]
    assert all(gap >= delay * 0.9 for gap, delay in zip(gaps, delays_seen[1:])), (gaps, delays_seen)
    assert outbox.delay == 0.0  # reset once sent


def test_with_a_probe_retries_test_the_broker_and_kept_messages_wait_for_listeners_to_settle(outboxes, caplog):
    caplog.set_level(logging.INFO, logger="nexus.queue")
    broker = FakeBroker(down=True)
    probes: list[float] = []

    def probe() -> None:
        probes.append(time.monotonic())
        if broker.down:
            raise ConnectionError("still down")

    outbox = outboxes(broker, probe=probe, settle=0.2)
    outbox.put("a")
    outbox.put("b")
    wait_until(lambda: len(probes) >= 3)
    assert broker.attempts == ["a"]  # the direct attempt only: retries send the probe, not a message
    broker.down = False
    assert outbox.flush(WAIT_S) is True
    assert broker.sent == ["a", "b"]
    assert broker.attempt_times[1] - probes[-1] >= 0.2  # sent `settle` after the probe went through
    assert any("answers again: sending 2 kept message(s)" in r.getMessage() for r in caplog.records)
    assert outbox.status()["ok"] is True


def test_status_reports_the_outage_while_it_lasts(outboxes):
    broker = FakeBroker(down=True)
    outbox = outboxes(broker, spawn=ManualSpawn())
    before = datetime.now(timezone.utc)
    outbox.put({"n": 1})
    outbox.put({"n": 2})
    status = outbox.status()
    assert status["ok"] is False
    assert status["pending"] == 2
    assert status["lastError"] == "ConnectionError: broker down"
    since = datetime.fromisoformat(status["since"].replace("Z", "+00:00"))
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= since <= datetime.now(timezone.utc)


def test_a_retry_that_fails_after_a_partial_recovery_keeps_the_rest_in_order(outboxes):
    broker = FakeBroker(down=True)
    spawn = ManualSpawn()
    outbox = outboxes(broker, spawn=spawn)
    for n in range(6):
        outbox.put(n)
    # Back for two messages, down again, then back for good.
    broker.down = False

    def flap(message: Any) -> None:
        if message == 2 and broker.attempts.count(2) == 1:
            broker.fail_next = 1

    broker.on_attempt = flap
    spawn.start()
    assert outbox.flush(WAIT_S) is True
    assert broker.sent == [0, 1, 2, 3, 4, 5]
    assert broker.attempts.count(2) == 2


def test_flush_gives_up_after_its_timeout_and_close_stops_the_worker(outboxes):
    broker = FakeBroker(down=True)
    spawn = ManualSpawn()
    outbox = outboxes(broker, spawn=spawn)
    outbox.put("stuck")
    worker = spawn.start()
    began = time.monotonic()
    assert outbox.flush(0.1) is False
    assert time.monotonic() - began < 2
    outbox.close()
    worker.join(WAIT_S)
    assert not worker.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        outbox.put("late")


def test_managers_encode_to_json_before_the_outbox_keeps_a_message(outboxes):
    # The managers encode before putting: the outbox holds the JSON text python-socketio publishes.
    broker = FakeBroker()
    manager = queue.QueueEmitter("redis://127.0.0.1:1/0", channel="c")
    manager.outbox = outboxes(broker)
    manager.emit("evt", {"x": [1, "é"]}, room="r", namespace="/")
    (body,) = broker.sent
    assert isinstance(body, str)
    decoded = json.loads(body)
    assert (decoded["method"], decoded["event"], decoded["room"], decoded["data"]) == ("emit", "evt", "r", [{"x": [1, "é"]}])


# -- the managers' bounded publish -----------------------------------------------------------------


def _silent_port() -> tuple[socket.socket, int]:
    """A port that accepts connections and never answers (a broker that hangs)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(50)
    return listener, listener.getsockname()[1]


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_an_emit_to_a_broker_that_hangs_returns_within_about_a_second(scheme):
    listener, port = _silent_port()
    url = f"redis://127.0.0.1:{port}/0" if scheme == "redis" else f"amqp://guest:guest@127.0.0.1:{port}//"
    manager = queue.QueueEmitter(url, channel="c")
    try:
        began = time.monotonic()
        manager.emit("evt", {"n": 1}, room="r", namespace="/")
        first = time.monotonic() - began
        began = time.monotonic()
        manager.emit("evt", {"n": 2}, room="r", namespace="/")
        second = time.monotonic() - began
        assert first < queue.PUBLISH_TIMEOUT_S + 0.75, first
        assert second < 0.1, second  # queued behind the first, not tried
        status = manager.queue_status()
        assert status["ok"] is False and status["pending"] == 2
        assert status["lastError"]
        assert manager.flush(0.2) is False
    finally:
        manager.close(0)
        listener.close()


def test_a_write_only_manager_comes_from_client_manager_only_with_a_queue(config_factory):
    assert queue.client_manager(config_factory(message_queue_url=None), write_only=True) is None
    assert isinstance(queue.client_manager(config_factory(message_queue_url=None)), queue.LocalManager)
    manager = queue.client_manager(config_factory(message_queue_url="redis://127.0.0.1:1/0"), write_only=True)
    try:
        assert isinstance(manager, queue.QueueEmitter)
        assert manager.queue_status() == {"ok": True, "pending": 0, "since": None, "lastError": None, "dropped": 0}
    finally:
        manager.close(0)


# -- readiness reports them ------------------------------------------------------------------------


def test_health_stays_a_plain_liveness_check(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def test_ready_without_a_queue_or_redis_checks_the_database_only(client):
    response = client.get("/health/ready")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["messageQueue"] == {"status": "disabled", "latencyMs": body["checks"]["messageQueue"]["latencyMs"]}
    assert body["checks"]["sharedState"]["status"] == "disabled"
    assert "failing" not in body


class _Manager:
    def __init__(self, status: dict[str, Any]):
        self.status = status

    def queue_status(self) -> dict[str, Any]:
        return dict(self.status)


def test_ready_names_a_failing_queue_and_answers_503(app, client, monkeypatch):
    server = app.extensions["socketio"].server
    outage = {
        "ok": False,
        "pending": 3,
        "since": "2030-01-01T00:00:00.000Z",
        "lastError": "OperationalError: Error 111 connecting to 10.0.0.7:6379. Connection refused.",
        "listening": False,
    }
    monkeypatch.setattr(server, "manager", _Manager(outage))
    response = client.get("/health/ready")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable" and body["failing"] == ["messageQueue"]
    queue_check = body["checks"]["messageQueue"]
    assert queue_check["status"] == "failing" and queue_check["pending"] == 3 and queue_check["listening"] is False
    assert queue_check["since"] == "2030-01-01T00:00:00.000Z"
    assert queue_check["error"] == "OperationalError"  # the kind; hosts and ports stay in the log
    assert "10.0.0.7" not in response.get_data(as_text=True)
    assert body["checks"]["database"]["status"] == "ok"

    monkeypatch.setattr(server, "manager", _Manager({**outage, "ok": True, "pending": 0, "since": None,
                                                     "lastError": None, "listening": True}))
    again = client.get("/health/ready")
    assert again.status_code == 200 and again.get_json()["checks"]["messageQueue"]["status"] == "ok"


def test_ready_names_a_failing_database_and_redis(app, client, monkeypatch):
    from nexus.extensions import db

    class DeadRedis:
        def ping(self) -> None:
            raise ConnectionError("Error 111 connecting to 10.0.0.9:6379.")

    stores = app.extensions["nexus.stores"]
    monkeypatch.setattr(stores, "shared", True)
    monkeypatch.setattr(stores, "client", DeadRedis())
    with app.app_context():
        engine = db.engine

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise ConnectionRefusedError("no database at 10.0.0.8")

    monkeypatch.setattr(type(engine), "connect", refuse)
    response = client.get("/health/ready")
    assert response.status_code == 503
    body = response.get_json()
    assert body["failing"] == ["database", "sharedState"]
    assert body["checks"]["database"] == {"status": "failing", "error": "ConnectionRefusedError",
                                          "latencyMs": body["checks"]["database"]["latencyMs"]}
    assert body["checks"]["sharedState"]["status"] == "failing"
    assert body["checks"]["messageQueue"]["status"] == "disabled"
    assert "10.0.0" not in response.get_data(as_text=True)


def test_ready_says_unavailable_while_the_instance_shuts_down(app, client):
    assert client.get("/health/ready").get_json()["checks"]["instance"] == {"status": "ok"}
    app.extensions["nexus.shutdown"].closing = True
    response = client.get("/health/ready")
    assert response.status_code == 503
    body = response.get_json()
    assert body["failing"] == ["instance"] and body["checks"]["instance"]["error"] == "ShuttingDown"
    assert client.get("/health").status_code == 200  # still alive: only not taking new work


def test_a_tracked_publication_is_confirmed_once_the_broker_takes_it_now_or_after_an_outage(outboxes):
    broker = FakeBroker()
    outbox = outboxes(broker)
    confirmed: list[str] = []
    assert outbox.put("now", done=lambda: confirmed.append("now")) is True
    assert confirmed == ["now"]
    broker.down = True
    assert outbox.put("later", done=lambda: confirmed.append("later")) is False
    assert confirmed == ["now"]  # kept, not yet confirmed
    broker.down = False
    assert outbox.flush(WAIT_S)
    assert confirmed == ["now", "later"]
    assert broker.sent == ["now", "later"]  # the broker gets the body, never the bookkeeping


def test_a_publication_fires_once_when_every_message_of_an_entry_is_taken(outboxes):
    broker = FakeBroker(down=True)
    outbox = outboxes(broker)
    fired: list[int] = []
    publication = queue.Publication(lambda: fired.append(1))
    with queue.tracking(publication):
        for body in ("a", "b"):
            publication.expect()
            outbox.put(body, done=publication.confirm)
    assert not publication.complete and fired == []
    broker.down = False
    assert outbox.flush(WAIT_S)
    assert publication.complete and fired == [1]


def test_a_publication_with_nothing_to_publish_is_complete_at_once():
    fired: list[int] = []
    with queue.tracking(queue.Publication(lambda: fired.append(1))) as publication:
        pass
    assert publication.complete and fired == [1]
