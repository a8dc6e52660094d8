"""The sequencer: each room's messages go out of a process once each and in seq order, gaps read
from the database (or announced with messages_missed when it cannot be read)."""
from __future__ import annotations

import pytest

from nexus.realtime.events import MESSAGES_MISSED, NEW_MESSAGE, ROOM_MESSAGE, USER_ONLINE
from nexus.realtime.sequencer import Sequencer, conversation

NS = "/"


def message(seq: int, room: str | None = "general", **extra) -> dict:
    return {"id": str(1000 + seq), "seq": seq, "roomId": room, "from": "1", "to": None if room else "2", **extra}


def seqs(admitted) -> list[int]:
    return [data["seq"] for event, data in admitted if event != MESSAGES_MISSED]


class Database:
    """The committed messages of a conversation, and every read made of them."""

    def __init__(self, last: int, room: str | None = "general"):
        self.rows = {seq: message(seq, room) for seq in range(1, last + 1)}
        self.reads: list[tuple[str, int, int]] = []
        self.down = False

    def fetch(self, sample, after, before):
        self.reads.append((conversation(sample), after, before))
        if self.down:
            raise ConnectionError("database unreachable")
        return [self.rows[seq] for seq in range(after + 1, before) if seq in self.rows]


def test_in_order_messages_pass_and_copies_are_dropped():
    sequencer = Sequencer()
    assert seqs(sequencer.admit(NS, "general", ROOM_MESSAGE, message(1))) == [1]
    assert seqs(sequencer.admit(NS, "general", ROOM_MESSAGE, message(2))) == [2]
    assert sequencer.admit(NS, "general", ROOM_MESSAGE, message(2)) == []
    assert sequencer.admit(NS, "general", ROOM_MESSAGE, message(1)) == []
    assert sequencer.dropped == 2


def test_a_message_that_skips_ahead_has_the_missing_ones_read_and_sent_first():
    db = Database(last=10)
    sequencer = Sequencer(db.fetch)
    sequencer.seed(NS, "general", 5)
    assert seqs(sequencer.admit(NS, "general", ROOM_MESSAGE, message(9))) == [6, 7, 8, 9]
    assert db.reads == [("general", 5, 9)]
    # The late copies arrive afterwards: dropped, nothing read again.
    for seq in (6, 7, 8):
        assert sequencer.admit(NS, "general", ROOM_MESSAGE, message(seq)) == []
    assert seqs(sequencer.admit(NS, "general", ROOM_MESSAGE, message(10))) == [10]
    assert len(db.reads) == 1
    assert sequencer.filled == 3


def test_when_the_database_cannot_be_read_the_gap_is_announced_then_the_message_sent():
    db = Database(last=10)
    db.down = True
    sequencer = Sequencer(db.fetch)
    sequencer.seed(NS, "general", 3)
    admitted = sequencer.admit(NS, "general", ROOM_MESSAGE, message(6))
    assert admitted[0] == (MESSAGES_MISSED, {"roomId": "general", "afterSeq": 3, "beforeSeq": 6})
    assert seqs(admitted) == [6]
    assert sequencer.gaps_unfilled == 1


def test_rooms_namespaces_and_direct_conversations_are_tracked_apart():
    sequencer = Sequencer()
    assert seqs(sequencer.admit(NS, "general", ROOM_MESSAGE, message(4))) == [4]
    assert seqs(sequencer.admit("/chat", "general", ROOM_MESSAGE, message(4))) == [4]
    assert seqs(sequencer.admit(NS, "random", ROOM_MESSAGE, message(4, room="random"))) == [4]
    direct = message(7, room=None)
    assert conversation(direct) == "dm:1:2"
    assert seqs(sequencer.admit(NS, "user_2", NEW_MESSAGE, direct)) == [7]
    assert sequencer.admit(NS, "user_2", NEW_MESSAGE, direct) == []


def test_events_without_a_seq_are_not_sequenced():
    sequencer = Sequencer()
    assert sequencer.admit(NS, "all_users", USER_ONLINE, {"userId": "1"}) is None
    assert sequencer.admit(NS, "general", ROOM_MESSAGE, {"content": "no seq"}) is None


def test_messages_arriving_while_a_gap_is_read_wait_and_keep_their_order():
    """A read of the database yields to other greenlets: what they bring meanwhile queues behind it."""
    sequencer = Sequencer()
    db = Database(last=12)
    arrived_meanwhile: list = []

    def fetch(sample, after, before):
        # Another greenlet delivers 9 (a late copy) and 11 and 12 while this read is in progress.
        for seq in (12, 9, 11):
            arrived_meanwhile.append(sequencer.admit(NS, "general", ROOM_MESSAGE, message(seq)))
        return db.fetch(sample, after, before)

    sequencer.fetch = fetch
    sequencer.seed(NS, "general", 7)
    assert seqs(sequencer.admit(NS, "general", ROOM_MESSAGE, message(10))) == [8, 9, 10, 11, 12]
    assert arrived_meanwhile == [[], [], []]


def test_forgetting_a_room_starts_it_again_from_the_next_seed():
    sequencer = Sequencer()
    sequencer.admit(NS, "general", ROOM_MESSAGE, message(3))
    sequencer.forget(NS, "general")
    assert len(sequencer) == 0
    sequencer.seed(NS, "general", 8)
    assert sequencer.admit(NS, "general", ROOM_MESSAGE, message(8)) == []
    assert seqs(sequencer.admit(NS, "general", ROOM_MESSAGE, message(9))) == [9]


@pytest.mark.parametrize("bad", [{"seq": "3", "roomId": "general"}, {"seq": 3, "roomId": None, "from": "x", "to": "y"}])
def test_malformed_sequence_fields_are_delivered_as_they_are(bad):
    assert Sequencer().admit(NS, "general", ROOM_MESSAGE, bad) is None


def test_rooms_left_empty_are_pruned():
    sequencer = Sequencer()
    sequencer.admit(NS, "general", ROOM_MESSAGE, message(1))
    sequencer.admit(NS, "user_2", NEW_MESSAGE, message(1, room=None))
    assert sequencer.prune(lambda namespace, room: room == "general") == 1
    assert len(sequencer) == 1
    assert sequencer.admit(NS, "general", ROOM_MESSAGE, message(1)) == []  # still tracked
