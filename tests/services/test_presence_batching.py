"""Presence's shared work on connect: status writes batched (Batcher), online lists read once for
everyone who asks at the same moment (SharedRead)."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import pytest

from nexus.services.batching import Batcher, SharedRead

WAIT_S = 5.0


def eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def in_thread(function: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = function()
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_writes_that_arrive_during_a_write_go_together_in_the_next_one_written_by_one_of_them():
    batches: list[tuple[str, list[str]]] = []
    release = threading.Event()

    def write(batch: list[str]) -> None:
        batches.append((threading.current_thread().name, batch))
        if len(batches) == 1:
            release.wait(WAIT_S)

    writer: Batcher[str, None] = Batcher(write)
    first, first_outcome = in_thread(lambda: writer.submit("a"))
    eventually(lambda: len(batches) == 1)
    others = [in_thread(lambda item=item: writer.submit(item)) for item in "bcd"]
    eventually(lambda: len(writer._pending) == 3)
    assert len(batches) == 1  # they wait: nobody writes beside the write under way
    release.set()
    for thread, outcome in [(first, first_outcome), *others]:
        thread.join(WAIT_S)
        assert outcome == {"value": None}
    assert [batch for _, batch in batches] == [["a"], ["b", "c", "d"]]
    assert batches[1][0] in {thread.name for thread, _ in others}
    assert not writer._busy and not writer._pending


def test_a_failed_write_fails_every_caller_of_its_batch_and_the_next_one_is_written():
    calls: list[list[int]] = []
    release = threading.Event()

    def write(batch: list[int]) -> None:
        calls.append(batch)
        if len(calls) == 1:
            release.wait(WAIT_S)
        if 2 in batch:
            raise RuntimeError("database down")

    writer: Batcher[int, None] = Batcher(write)
    first, first_outcome = in_thread(lambda: writer.submit(1))
    eventually(lambda: len(calls) == 1)
    failing = [in_thread(lambda item=item: writer.submit(item)) for item in (2, 3)]
    eventually(lambda: len(writer._pending) == 2)
    release.set()
    for thread, _ in [(first, first_outcome), *failing]:
        thread.join(WAIT_S)
    assert first_outcome == {"value": None}
    assert [str(outcome["error"]) for _, outcome in failing] == ["database down", "database down"]
    writer.submit(4)
    assert calls == [[1], [2, 3], [4]]


def test_callers_during_a_read_share_the_next_read_which_begins_after_all_of_them_asked():
    started: list[int] = []
    release = threading.Event()

    def read() -> list[int]:
        started.append(len(started) + 1)
        if len(started) == 1:
            release.wait(WAIT_S)
        return [len(started)]

    shared: SharedRead[list[int]] = SharedRead(read)
    first, first_outcome = in_thread(shared.get)
    eventually(lambda: started == [1])
    later = [in_thread(shared.get) for _ in range(4)]
    eventually(lambda: shared._next is not None)
    time.sleep(0.2)  # every later caller is waiting for the read after the one under way
    assert started == [1]
    release.set()
    for thread, _ in [(first, first_outcome), *later]:
        thread.join(WAIT_S)
    assert first_outcome["value"] == [1]
    values = [outcome["value"] for _, outcome in later]
    assert values == [[2]] * 4 and all(value is values[0] for value in values)  # one read, shared
    assert started == [1, 2]
    assert shared.get() == [3]  # a caller alone reads afresh


def test_a_failed_shared_read_fails_its_callers_only():
    answers = iter([RuntimeError("redis down"), ["ok"]])

    def read() -> list[str]:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    shared: SharedRead[list[str]] = SharedRead(read)
    with pytest.raises(RuntimeError, match="redis down"):
        shared.get()
    assert shared.get() == ["ok"]


# -- through Presence, on the database -----------------------------------------------------------


def together(app, writer: Batcher, calls: list[Callable[[], Any]]) -> list[int]:
    """Run `calls` in threads of their own, the first alone and the others while its write is held,
    so that they are written in one batch; the batch sizes written."""
    sizes: list[int] = []
    release = threading.Event()
    write = writer.handle

    def held(batch: list[Any]) -> None:
        sizes.append(len(batch))
        if len(sizes) == 1:
            release.wait(WAIT_S)
        write(batch)

    def in_context(call: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with app.app_context():
                return call()
        return run

    writer.handle = held
    try:
        first = in_thread(in_context(calls[0]))
        eventually(lambda: sizes == [1])
        rest = [in_thread(in_context(call)) for call in calls[1:]]
        eventually(lambda: len(writer._pending) == len(rest))
        release.set()
        for thread, outcome in [first, *rest]:
            thread.join(WAIT_S)
            assert "error" not in outcome, outcome
    finally:
        writer.handle = write
    return sizes


def test_users_coming_online_and_going_offline_together_are_written_in_one_batch_each(app, db, broadcasts,
                                                                                      make_user):
    from nexus.models import User
    from nexus.services.presence import Presence
    from nexus.services.rooms import Actor
    from nexus.stores.memory import MemoryPresenceStore, MemoryTally

    presence = Presence(MemoryTally(origin=0), MemoryPresenceStore(), app.config["NEXUS"])
    people = [make_user(f"member{n}") for n in range(5)]
    actors = [Actor(user_id=user.id, role="user", username=user.username) for user in people]
    presence.update_status(actors[4], "busy")  # chosen before: restored when they come online

    sizes = together(app, presence._online_writes,
                     [lambda actor=actor: presence.connected(actor, f"sid-{actor.user_id}") for actor in actors])
    assert sizes == [1, 4]
    rows = {row.id: row for row in db.session.execute(select_users(User, [user.id for user in people]))}
    assert {rows[user.id].status for user in people[:4]} == {"online"} and rows[people[4].id].status == "busy"
    online = [event["data"] for event in broadcasts.events("user_online")]
    assert sorted(data["userId"] for data in online) == sorted(str(user.id) for user in people)
    for data in online:
        assert data["version"] == rows[int(data["userId"])].presence_version
        assert data["userInfo"]["username"] == rows[int(data["userId"])].username
    assert [e["skip_sid"] for e in broadcasts.events("user_online") if e["data"]["userId"] == str(people[0].id)] \
        == [f"sid-{people[0].id}"]

    leaving = [lambda actor=actor: presence.disconnected(actor) for actor in actors]
    sizes = together(app, presence._offline_writes, leaving)
    assert sizes == [1, 4]
    db.session.expire_all()
    rows = {row.id: row for row in db.session.execute(select_users(User, [user.id for user in people]))}
    assert {row.status for row in rows.values()} == {"offline"}
    offline = [event["data"] for event in broadcasts.events("user_offline")]
    assert sorted(data["userId"] for data in offline) == sorted(str(user.id) for user in people)
    assert all(data["version"] == rows[int(data["userId"])].presence_version for data in offline)
    assert all(data["lastSeen"] for data in offline)


def select_users(model: Any, ids: list[int]) -> Any:
    from sqlalchemy import select

    return select(model.id, model.username, model.status, model.presence_version).where(model.id.in_(ids))
