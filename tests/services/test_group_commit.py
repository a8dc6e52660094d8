"""Group commit of sent messages: concurrent senders (gevent greenlets) are written a batch per
transaction, each answered after its batch's commit, with every message stored once, per-room seqs
gapless in the order the senders are answered, and one message's fault kept to that message."""
from __future__ import annotations

import sqlite3
import time
from typing import Any

import gevent
import pytest
from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import OperationalError

from nexus import outages
from nexus.config import Config, ConfigError
from nexus.errors import NexusError
from nexus.extensions import db as _db
from nexus.models import Message, Room
from nexus.realtime import broadcast
from nexus.services import commits, messages, rooms
from nexus.services.rooms import Actor
from nexus.services.users import create_user
from tests.conftest import BroadcastRecorder

ROOMS = ("alpha", "beta", "gamma")


def actor_of(user) -> Actor:
    return Actor(user_id=user.id, role=user.role, username=user.username, display_name=user.display_name)


@pytest.fixture
def green_app(app_factory):
    """An app whose committer is a greenlet (as under the gevent server), with a broadcast recorder."""
    app = app_factory(async_mode="gevent", group_commit_ms=2)
    recorder = BroadcastRecorder()
    namespaces = app.extensions["nexus.broadcaster"].namespaces
    app.extensions["nexus.broadcaster"] = broadcast.Broadcaster(recorder, namespaces)
    app.recorder = recorder
    return app


@pytest.fixture
def chatters(green_app) -> list[Actor]:
    """Twelve users, members of every room of ROOMS."""
    with green_app.app_context():
        people = [actor_of(create_user(f"chatter{n}", "correct-horse-1")) for n in range(12)]
        for name in ROOMS:
            for person in people:
                rooms.join(person, name, auto_create=True, guests_can_chat=False)
        _db.session.commit()
    return people


def committer(app) -> commits.GroupCommit:
    return app.extensions["nexus.group_commit"]


def text(content: Any, **extra: Any) -> dict[str, Any]:
    return {"content": content, "type": "text", **extra}


def send_all(app, jobs: list[tuple[Actor, str, dict[str, Any]]],
             after: Any = None) -> tuple[list[Any], list[tuple[str, int, str]]]:
    """Send each (actor, room, data) from a greenlet of its own, all at once: the outcome of each (a Sent
    or the exception it raised), and (room, seq, message id) of each success in the order the senders
    were answered. `after` runs in a greenlet once the senders wait, before their batch is written."""
    acked: list[tuple[str, int, str]] = []
    outcomes: list[Any] = [None] * len(jobs)

    def send(index: int, actor: Actor, room: str, data: dict[str, Any]) -> None:
        with app.app_context():
            try:
                sent = messages.send_to_room(actor, room, data)
            except Exception as exc:
                outcomes[index] = exc
                return
            outcomes[index] = sent
            acked.append((room, sent.message["seq"], sent.message["id"]))
            # Answered after the commit: a stored message's event, sent only after a commit, is already out.
            published = {item["data"]["id"] for item in app.recorder.sent}
            assert not sent.created or sent.message["id"] in published, "answered before its commit"

    greenlets = [gevent.spawn(send, index, *job) for index, job in enumerate(jobs)]
    if after is not None:
        greenlets.append(gevent.spawn(after))
    gevent.joinall(greenlets, timeout=60, raise_error=True)
    return outcomes, acked


def stored(app) -> list[Message]:
    with app.app_context():
        messages_ = _db.session.scalars(select(Message).order_by(Message.id)).all()
        _db.session.expunge_all()
        return list(messages_)


def last_seqs(app) -> dict[str, int]:
    with app.app_context():
        return dict(_db.session.execute(select(Room.name, Room.last_seq)).all())


def test_concurrent_senders_are_written_in_batches_once_each_with_gapless_seqs_in_ack_order(green_app, chatters):
    jobs = [(chatters[n % 12], ROOMS[n % 3], text(f"m{n}", client_msg_id=f"c-{n}")) for n in range(150)]
    outcomes, acked = send_all(green_app, jobs)
    assert all(isinstance(outcome, messages.Sent) and outcome.created for outcome in outcomes), outcomes

    rows = stored(green_app)
    assert sorted(row.client_msg_id for row in rows) == sorted(f"c-{n}" for n in range(150))  # each once
    for name in ROOMS:
        acked_seqs = [seq for room, seq, _ in acked if room == name]
        assert acked_seqs == list(range(1, 51)), name  # gapless, and answered in seq order
        assert last_seqs(green_app)[name] == 50
        published = [item["data"]["seq"] for item in green_app.recorder.events("room_message") if item["room"] == name]
        assert published == list(range(1, 51)), name  # each event once per namespace, in seq order
    assert [outcome.message["content"] for outcome in outcomes] == [f"m{n}" for n in range(150)]
    gc = committer(green_app)
    assert gc.written == 150 and gc.batches < 150  # messages shared transactions


def test_a_lone_message_is_written_at_once_whatever_the_window(app_factory, make_user):
    app = app_factory(async_mode="gevent", group_commit_ms=1000)
    with app.app_context():
        alice = actor_of(create_user("alice", "correct-horse-1"))
        rooms.join(alice, "quiet", auto_create=True, guests_can_chat=False)
        started = time.monotonic()
        sent = messages.send_to_room(alice, "quiet", text("anyone?"))
        assert time.monotonic() - started < 0.5
        assert sent.created and sent.message["seq"] == 1
        assert committer(app).batches == 1


def test_one_bad_message_does_not_fail_the_others_of_its_batch(green_app, chatters):
    jobs = [(chatters[n], "alpha", text(f"m{n}")) for n in range(6)]
    jobs.insert(3, (chatters[7], "alpha", text(None)))  # refused by the database alone (content is required)
    jobs += [(chatters[8], "beta", text("b0")), (chatters[9], "beta", text("b1"))]

    def delete_beta() -> None:  # the room goes away between its senders' checks and their batch
        with green_app.app_context():
            _db.session.execute(delete(Room).where(Room.name == "beta"))
            _db.session.commit()

    outcomes, _ = send_all(green_app, jobs, after=delete_beta)
    bad, good, gone = outcomes[3], outcomes[:3] + outcomes[4:7], outcomes[7:]
    assert not isinstance(bad, messages.Sent) and outages.dependency_of(bad) is None  # an INTERNAL_ERROR
    assert all(isinstance(outcome, NexusError) and outcome.code == "ROOM_NOT_FOUND" for outcome in gone), gone
    assert [outcome.message["seq"] for outcome in good] == [1, 2, 3, 4, 5, 6]
    assert [row.content for row in stored(green_app)] == [f"m{n}" for n in range(6)]
    assert last_seqs(green_app)["alpha"] == 6


def test_a_database_outage_fails_every_message_of_the_batch_and_stores_none(green_app, chatters, monkeypatch):
    jobs = [(chatters[n], ROOMS[n % 3], text(f"m{n}")) for n in range(9)]
    real_flush = _db.session.flush
    calls = []

    def unreachable() -> None:
        calls.append(1)
        raise OperationalError("INSERT INTO messages", {}, sqlite3.OperationalError("database is locked"))

    monkeypatch.setattr(_db.session, "flush", unreachable)
    outcomes, _ = send_all(green_app, jobs)
    monkeypatch.setattr(_db.session, "flush", real_flush)

    assert len(calls) == 1  # one batch, not retried message by message
    assert all(outcome is outcomes[0] for outcome in outcomes)  # the same error for each
    with green_app.app_context():
        refused = outages.refuse(outcomes[0])
    assert refused is not None and refused.code == "UNAVAILABLE" and refused.retry_after_ms
    assert stored(green_app) == [] and green_app.recorder.sent == []
    assert set(last_seqs(green_app).values()) == {0}


def test_a_database_outage_while_checking_fails_the_batch_and_the_next_batch_is_written(green_app, chatters,
                                                                                        monkeypatch):
    real_check = messages._check

    def unreachable(batch, outcomes):
        real_check(batch, outcomes)  # the reads have begun a transaction, which must not outlive the batch
        raise OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked"))

    monkeypatch.setattr(messages, "_check", unreachable)
    failed, _ = send_all(green_app, [(chatters[n], "alpha", text(f"lost{n}")) for n in range(4)])
    assert all(outages.dependency_of(outcome) == outages.DATABASE for outcome in failed), failed
    monkeypatch.setattr(messages, "_check", real_check)
    written, _ = send_all(green_app, [(chatters[n], "alpha", text(f"kept{n}")) for n in range(4)])
    assert [outcome.message["seq"] for outcome in written] == [1, 2, 3, 4]
    assert [row.content for row in stored(green_app)] == [f"kept{n}" for n in range(4)]


def test_a_client_msg_id_sent_twice_in_one_batch_is_stored_once(green_app, chatters):
    alice, bob = chatters[0], chatters[1]
    jobs = [(alice, "alpha", text("once", client_msg_id="same")) for _ in range(4)]
    jobs += [(bob, "alpha", text("same id, other sender", client_msg_id="same")), (bob, "alpha", text("plain"))]
    outcomes, _ = send_all(green_app, jobs)
    alice_sent = outcomes[:4]
    assert [outcome.created for outcome in alice_sent] == [True, False, False, False]
    assert {outcome.message["id"] for outcome in alice_sent} == {alice_sent[0].message["id"]}
    assert outcomes[4].created and outcomes[5].created
    assert len(stored(green_app)) == 3
    assert len(green_app.recorder.events("room_message")) == 3


def store_directly(app, sender: Actor, client_msg_id: str) -> None:
    """What another instance does: commit a message with this sender's clientMsgId."""
    with app.app_context():
        room_id = _db.session.scalar(select(Room.id).where(Room.name == "alpha"))
        _db.session.execute(insert(Message).values(room_id=room_id, seq=1000, sender_id=sender.user_id, type="text",
                                                   content="retry", client_msg_id=client_msg_id,
                                                   created_at=messages.utcnow()))
        _db.session.commit()


def test_a_client_msg_id_stored_before_the_batch_answers_with_the_stored_message(green_app, chatters):
    alice = chatters[0]
    jobs = [(alice, "alpha", text("retry", client_msg_id="stored")), (chatters[1], "alpha", text("other"))]
    outcomes, _ = send_all(green_app, jobs, after=lambda: store_directly(green_app, alice, "stored"))
    assert outcomes[0].created is False and outcomes[0].message["seq"] == 1000
    assert outcomes[1].created is True and outcomes[1].message["seq"] == 1
    with green_app.app_context():
        assert _db.session.scalar(select(func.count()).select_from(Message)) == 2


def test_a_client_msg_id_stored_by_another_transaction_during_the_batch_is_answered_and_the_rest_written(
        green_app, chatters, monkeypatch):
    alice = chatters[0]
    real = messages._stored_client_keys
    raced: list[int] = []

    def racing(items):  # the other instance commits right after this batch looked
        found = real(items)
        if not raced:
            raced.append(1)
            store_directly(green_app, alice, "raced")
        return found

    monkeypatch.setattr(messages, "_stored_client_keys", racing)
    jobs = [(chatters[1], "alpha", text("before")), (alice, "alpha", text("retry", client_msg_id="raced")),
            (chatters[2], "alpha", text("after"))]
    outcomes, _ = send_all(green_app, jobs)
    assert outcomes[1].created is False and outcomes[1].message["seq"] == 1000
    assert [outcomes[0].message["seq"], outcomes[2].message["seq"]] == [1, 2]  # written again, still gapless
    assert len(green_app.recorder.events("room_message")) == 2


def test_membership_is_checked_for_each_message_of_a_batch(green_app, chatters):
    owner, member, outsider = chatters[0], chatters[1], chatters[2]
    with green_app.app_context():
        admin = actor_of(create_user("boss", "correct-horse-1", role="admin"))
        room = rooms.create(owner, "secret", "private", None)
        rooms.add_member(owner, room, member.user_id)
        _db.session.commit()
    jobs = [(member, "secret", text("in")), (outsider, "secret", text("let me in")), (admin, "secret", text("admin")),
            (member, "no-such-room", text("lost")), (member, "alpha", text("public"))]
    outcomes, _ = send_all(green_app, jobs)
    assert [getattr(outcome, "code", None) for outcome in outcomes] == [
        None, "FORBIDDEN", None, "ROOM_NOT_FOUND", None]
    assert [outcomes[0].message["seq"], outcomes[2].message["seq"], outcomes[4].message["seq"]] == [1, 2, 1]
    assert committer(green_app).batches == 1


def test_direct_messages_share_batches_too(green_app, chatters):
    alice, bob = chatters[0], chatters[1]
    with green_app.app_context():
        first = messages.send_direct(alice, bob.user_id, text("hello"), sender_sid="alice-sid")  # makes the room
    assert first.message["seq"] == 1
    results: list[Any] = []

    def send(n: int) -> None:
        sender, other = (alice, bob) if n % 2 else (bob, alice)
        with green_app.app_context():
            results.append(messages.send_direct(sender, other.user_id, text(f"d{n}"), sender_sid=f"sid-{n}"))

    gevent.joinall([gevent.spawn(send, n) for n in range(10)], timeout=30, raise_error=True)
    assert [sent.message["seq"] for sent in results] == list(range(2, 12))
    assert committer(green_app).written == 10
    emitted = [(item["room"], item["skip_sid"], item["data"]["seq"])
               for item in green_app.recorder.events("new_message")]
    for n, sent in enumerate(results):  # to every socket of the recipient, and the sender's other ones
        assert (f"user_{int(sent.message['to'])}", None, sent.message["seq"]) in emitted
        assert (f"user_{sent.message['from']}", f"sid-{n}", sent.message["seq"]) in emitted


def test_with_group_commit_off_each_message_has_a_transaction_of_its_own(app_factory):
    app = app_factory(async_mode="gevent", group_commit_ms=0)
    with app.app_context():
        alice = actor_of(create_user("alice", "correct-horse-1"))
        rooms.join(alice, "solo", auto_create=True, guests_can_chat=False)
        seqs = [messages.send_to_room(alice, "solo", text(f"m{n}")).message["seq"] for n in range(3)]
    assert seqs == [1, 2, 3]
    assert "nexus.group_commit" not in app.extensions


def test_the_setting_is_read_and_checked():
    assert Config.from_env({}).group_commit_ms == 2
    assert Config.from_env({"NEXUS_GROUP_COMMIT_MS": "0"}).group_commit_ms == 0
    with pytest.raises(ConfigError) as bad:
        Config.from_env({"NEXUS_GROUP_COMMIT_MS": "-1"})
    assert bad.value.variable == "NEXUS_GROUP_COMMIT_MS"


def test_a_socket_is_answered_unavailable_when_its_batch_cannot_be_written(app, db, make_user, token_for,
                                                                           socket_client, monkeypatch):
    user = make_user("dora")
    client = socket_client(token=token_for(user))
    assert client.emit("join_room", {"room": "general"}, callback=True)["success"]

    def unreachable() -> None:
        raise OperationalError("INSERT INTO messages", {}, sqlite3.OperationalError("database is locked"))

    monkeypatch.setattr(db.session, "flush", unreachable)
    ack = client.emit("send_message", {"roomId": "general", "content": "hi"}, callback=True)
    monkeypatch.undo()
    assert ack["success"] is False and ack["error"]["code"] == "UNAVAILABLE", ack
    assert db.session.scalar(select(func.count()).select_from(Message)) == 0
    assert app.extensions["nexus.group_commit"].batches == 1  # the message went through the committer
