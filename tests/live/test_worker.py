"""The Celery worker (`celery -A nexus.worker worker`) as a real process: tasks sent with `.delay()`
notify users connected to a running Nexus server, through Redis or RabbitMQ.

The worker's broker is the queue's URL (no CELERY_BROKER_URL), its task queue is named after the
test's channel, and it is stopped with a warm shutdown at the end.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from nexus.config import Config
from tests.live.test_emitter import process_env
from tests.support import services
from tests.support.cluster import assert_none_receive
from tests.support.live import procfile_command

pytestmark = pytest.mark.live

broker_params = pytest.mark.parametrize(
    "broker",
    [pytest.param("redis", marks=pytest.mark.redis), pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)],
)
TASK_TIMEOUT_S = 30


class Worker:
    """`celery -A nexus.worker worker --pool=solo` with its output in a file."""

    SOLO = [
        sys.executable, "-m", "celery", "-A", "nexus.worker", "worker", "--pool=solo", "--loglevel=INFO",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]

    def __init__(self, env: dict[str, str], log_path: Path, command: list[str] | None = None):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            command or [*self.SOLO, "-n", f"test-{uuid.uuid4().hex[:8]}@%h"],
            cwd=services.ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while " ready." not in self.log():
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited with {self.process.returncode}:\n{self.log()}")
            assert time.monotonic() < deadline, f"the worker was not ready within {timeout}s:\n{self.log()}"
            time.sleep(0.1)

    def stop(self) -> int | None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # warm shutdown: the emitter is flushed
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log.close()
        return self.process.returncode


@pytest.fixture
def worker_factory(tmp_path) -> Iterator:
    started: list[Worker] = []

    def start(env: dict[str, str], command: list[str] | None = None) -> Worker:
        worker = Worker(env, tmp_path / f"worker-{len(started)}.log", command)
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def celery_client(mq, tmp_path):
    """The sending side: a Celery app for the test's queue, as a web process would have it."""
    from nexus.worker import make_celery

    config = Config.from_env({**mq.env, "NEXUS_INSTANCE_PATH": str(tmp_path / "client"), "JWT_SECRET": "x" * 40})
    client = make_celery(config)
    yield client
    client.close()


@broker_params
def test_a_task_sent_with_delay_notifies_the_connected_user(
    broker, mq, live_server, clients, tmp_path, worker_factory, celery_client
):
    url, seeder = live_server.database()
    alice_id = seeder.user("alice")["id"]
    seeder.user("bob")
    server = live_server.start(url, env=mq.env)
    alice = clients("alice", server, seeder.token("alice"))
    bob = clients("bob", server, seeder.token("bob"))
    assert alice.sio.transport() == bob.sio.transport() == "websocket"
    mq.wait_until_listening(alice, bob)
    worker = worker_factory(process_env(live_server, url, tmp_path, mq.env))

    send_notification = celery_client.tasks["nexus.worker.send_notification"]
    text = f"Your report is ready ({broker}) {uuid.uuid4().hex}"
    result = send_notification.delay(alice_id, "Report", text, type="success", data={"reportId": 7})
    sent = result.get(timeout=TASK_TIMEOUT_S)

    got = alice.wait_for("notification", lambda data: data["message"] == text)
    assert got == sent
    assert (got["title"], got["type"], got["data"]) == ("Report", "success", {"reportId": 7})
    assert got["from"] == {"id": None, "name": "service:worker"}
    assert_none_receive("notification", bob)

    # By username too, and a broadcast task.
    by_name = send_notification.delay("bob", "Hello", f"bob {text}").get(timeout=TASK_TIMEOUT_S)
    assert bob.wait_for("notification", lambda data: data["id"] == by_name["id"])["message"] == f"bob {text}"
    system = celery_client.tasks["nexus.worker.broadcast_system_message"].delay(f"all {text}").get(
        timeout=TASK_TIMEOUT_S
    )
    for client in (alice, bob):
        assert client.wait_for("system_message")["message"] == system["message"] == f"all {text}"
    assert alice.received("notification") == [sent]

    log = worker.log()
    assert f"Task nexus.worker.send_notification[{result.id}] succeeded" in log, log
    assert worker.stop() == 0
    assert "live events that could not reach" not in worker.log()


@broker_params
def test_a_task_for_a_missing_target_fails_with_the_code_and_is_not_retried(
    broker, mq, live_server, clients, tmp_path, worker_factory, celery_client
):
    url, seeder = live_server.database()
    seeder.user("alice")
    server = live_server.start(url, env=mq.env)
    alice = clients("alice", server, seeder.token("alice"))
    mq.wait_until_listening(alice)
    worker = worker_factory(process_env(live_server, url, tmp_path, mq.env))

    missing_user = celery_client.tasks["nexus.worker.send_notification"].delay("nobody-here", "Hi", "there")
    missing_room = celery_client.tasks["nexus.worker.broadcast_room_message"].delay("no-such-room", "hello")
    for result, code in ((missing_user, "USER_NOT_FOUND"), (missing_room, "ROOM_NOT_FOUND")):
        with pytest.raises(Exception) as failure:
            result.get(timeout=TASK_TIMEOUT_S)
        assert str(failure.value).startswith(f"{code}: "), repr(failure.value)
        assert result.state == "FAILURE"

    # The worker logs a failure just after it stores the result: wait for both lines.
    deadline = time.monotonic() + 10
    failed = [f"[{result.id}] raised unexpected: TaskFailed(" for result in (missing_user, missing_room)]
    while not all(line in worker.log() for line in failed) and time.monotonic() < deadline:
        time.sleep(0.1)
    log = worker.log()
    for result, line in zip((missing_user, missing_room), failed):
        assert log.count(f"[{result.id}] received") == 1, log  # run once: not retried
        assert line in log
    assert "Retry" not in log
    assert_none_receive("notification", alice)
    assert_none_receive("system_message", alice, window=0.2)


@pytest.mark.redis
@pytest.mark.parametrize("broker", ["redis"])
def test_the_procfile_worker_command_runs_the_tasks(broker, mq, live_server, clients, tmp_path, worker_factory,
                                                    celery_client):
    command = procfile_command("worker")
    assert command.startswith("celery -A nexus.worker worker")
    url, seeder = live_server.database()
    seeder.user("carol", department="sales")
    seeder.user("bob", department="engineering")
    server = live_server.start(url, env=mq.env)
    carol = clients("carol", server, seeder.token("carol"))
    bob = clients("bob", server, seeder.token("bob"))
    mq.wait_until_listening(carol, bob)
    env = process_env(live_server, url, tmp_path, mq.env)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    worker_factory(env, ["bash", "-c", "exec " + command])  # prefork, two children

    text = f"sales only {uuid.uuid4().hex}"
    sent = celery_client.tasks["nexus.worker.broadcast_department_message"].delay("sales", text).get(
        timeout=TASK_TIMEOUT_S
    )
    got = carol.wait_for("department_message")
    assert got["message"] == sent["message"] == text and got["from"]["name"] == "service:worker"
    assert_none_receive("department_message", bob)
    assert carol.sio.transport() == bob.sio.transport() == "websocket"
