"""In-order, once-only delivery of messages that carry a `seq`, per room, in each process.

Every message of a room (or of a direct conversation) has a gapless `seq`, taken under the
room's row lock, so when seq N is committed every seq below it is committed too. Publications
may still arrive out of order (an instance delivers its own senders' messages at once while
another instance's wait in its outbox during a broker outage) or twice (the transactional
outbox publishes at least once). The sequencer sits where python-socketio fans an event out to
the sockets of this process: per (namespace, target room, conversation) it remembers the last
seq delivered here; a copy at or below it is dropped, the next one goes out, and one that
skips ahead first has the missing ones read from the database and delivered before it. If the
database cannot be read, the message goes out anyway, preceded by `messages_missed` naming the
gap, so the client can fetch it with `get_history`.

Only rooms with sockets in this process are tracked; a room is seeded when a socket joins it,
with the room's last seq as read at that moment (what came before is history or catch-up).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from nexus.realtime.events import MESSAGES_MISSED, NEW_MESSAGE, ROOM_MESSAGE

log = logging.getLogger("nexus.sequencer")

SEQUENCED = frozenset({ROOM_MESSAGE, NEW_MESSAGE})

#: fetch(sample message, after, before): the messages with after < seq < before of the sample's
#: conversation, oldest first, as the wire shows them; raises when the database cannot be read.
Fetch = Callable[[dict[str, Any], int, int], list[dict[str, Any]]]


@dataclass
class _Track:
    last: int
    filling: bool = False
    waiting: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


def conversation(data: dict[str, Any]) -> str | None:
    """The conversation a message belongs to: its room's name, or dm:LOW:HIGH for a direct message."""
    room = data.get("roomId")
    if room:
        return str(room)
    sender, recipient = data.get("from"), data.get("to")
    if sender is None or recipient is None:
        return None
    try:
        low, high = sorted((int(sender), int(recipient)))
    except (TypeError, ValueError):
        return None
    return f"dm:{low}:{high}"


class Sequencer:
    """Per (namespace, room, conversation): the last seq delivered by this process."""

    def __init__(self, fetch: Fetch | None = None):
        self.fetch = fetch
        self._tracks: dict[tuple[str, str], dict[str, _Track]] = {}
        self.filled = 0  # messages read from the database to close a gap
        self.dropped = 0  # copies dropped (already delivered here)
        self.gaps_unfilled = 0

    def seed(self, namespace: str, room: str, last_seq: int) -> None:
        """A socket joined `room`, whose last committed seq was `last_seq`: track it from there."""
        self._tracks.setdefault((namespace, room), {}).setdefault(room, _Track(last_seq))

    def forget(self, namespace: str, room: str) -> None:
        """No socket of this process is in the room any more."""
        self._tracks.pop((namespace, room), None)

    def prune(self, occupied: Callable[[str, str], bool]) -> int:
        """Forget the rooms no socket of this process is in any more (a user room whose user left
        and was sent nothing since); returns how many."""
        gone = [key for key in self._tracks if not occupied(*key)]
        for key in gone:
            del self._tracks[key]
        return len(gone)

    def admit(self, namespace: str, room: str, event: str, data: Any) -> list[tuple[str, Any]] | None:
        """What to deliver to the room now, in order, for this emission: [(event, data), ...];
        [] for a copy already delivered (or queued behind a gap being filled); None when the
        event is not sequenced (deliver it as it is)."""
        if event not in SEQUENCED or not isinstance(data, dict):
            return None
        seq = data.get("seq")
        topic = conversation(data)
        if not isinstance(seq, int) or topic is None:
            return None
        topics = self._tracks.setdefault((namespace, room), {})
        track = topics.get(topic)
        if track is None:
            topics[topic] = _Track(seq)
            return [(event, data)]
        if track.filling:  # another greenlet is reading a gap from the database: wait behind it
            track.waiting.append((seq, data))
            return []
        if seq <= track.last:
            self.dropped += 1
            return []
        if seq == track.last + 1:
            track.last = seq
            return [(event, data)]
        return self._close_gap(track, event, seq, data)

    def _close_gap(self, track: _Track, event: str, seq: int, data: dict[str, Any]) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        pending = [(seq, data)]
        track.filling = True
        try:
            while pending:
                pending.sort(key=lambda item: item[0])
                seq, data = pending.pop(0)
                if seq <= track.last:
                    self.dropped += 1
                elif seq == track.last + 1:
                    track.last = seq
                    out.append((event, data))
                else:
                    missing = self._read(data, track.last, seq)
                    if missing is None:
                        self.gaps_unfilled += 1
                        out.append((MESSAGES_MISSED, _gap_notice(data, track.last, seq)))
                    else:
                        for message in missing:
                            if isinstance(message.get("seq"), int) and message["seq"] > track.last:
                                out.append((event, message))
                                track.last = message["seq"]
                                self.filled += 1
                    if seq > track.last:
                        track.last = seq
                        out.append((event, data))
                # What arrived while the database was read.
                pending.extend(track.waiting)
                track.waiting.clear()
        finally:
            track.filling = False
        return out

    def _read(self, sample: dict[str, Any], after: int, before: int) -> list[dict[str, Any]] | None:
        if self.fetch is None:
            return None
        try:
            return self.fetch(sample, after, before)
        except Exception as exc:  # the database is unreachable: deliver, and say what is missing
            log.warning("could not read seqs %d-%d of %s to close a gap (%s); sent messages_missed",
                        after + 1, before - 1, conversation(sample), type(exc).__name__)
            return None

    def __len__(self) -> int:
        return sum(len(topics) for topics in self._tracks.values())


def _gap_notice(data: dict[str, Any], after: int, before: int) -> dict[str, Any]:
    notice = {"roomId": data.get("roomId"), "afterSeq": after, "beforeSeq": before}
    if not data.get("roomId"):
        notice["with"] = [data.get("from"), data.get("to")]
    return notice
