"""A member removed from a private room while connected to other instances, with messages flowing.

Three Procfile instances on Redis (shared state; the message queue on Redis, then on RabbitMQ) and
a PostgreSQL database of their own.
The member has sockets on the two instances that do not serve the removal; senders on all three
instances keep sending into the room (so every path races the removal: an instance's own senders'
fan-out, the queue, the outbox). The owner removes the member over REST on the third instance.

Checked: every socket of the removed member is told `removed_from_room` and receives no message
whose seq is above the last seq committed before the removal (the `lastSeq` the removal answers,
bracketed by what the senders had acknowledged before the request and after the answer); the
others keep receiving every message, once each; the member's typing is announced stopped; and
`join_room`, `get_history`, REST history and a catch-up on connect are refused afterwards.
"""
from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Iterator

import pytest
import requests

from tests.live.test_admin_live import AdminClient
from tests.support.cluster import BROKERS, Client
from tests.support.scale import Grid, close_all, grid, wait_until

pytestmark = pytest.mark.live

IDS = ["member-a", "member-b", "member-c"]
ROOM = "inner-circle"
WAIT = 10.0
SENDERS_EACH = 4  # sockets sending on each instance the member is connected to
USERS: dict[str, dict[str, Any]] = {"olive": {}, "mike": {}, "sara": {}, "tess": {}, "root": {"role": "admin"},
                                    "bill": {}}


@pytest.fixture(scope="module", params=sorted(BROKERS))
def three(request, tmp_path_factory) -> Iterator[Grid]:
    """Three instances on Redis (shared state) with the message queue on Redis, then on RabbitMQ."""
    with grid(tmp_path_factory.mktemp("membership"), queue_url=BROKERS[request.param], ids=IDS,
              users=USERS) as the_grid:
        yield the_grid


def rest(grid_: Grid, server: Any, method: str, path: str, user: str, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {grid_.token(user)}"}
    return requests.request(method, server.url + "/api" + path, headers=headers, timeout=WAIT, **kwargs)


class Sender(threading.Thread):
    """Sends into the room as fast as acks come back, and keeps the acknowledged seqs with their times."""

    def __init__(self, client: Client):
        super().__init__(daemon=True)
        self.client = client
        self.stop = threading.Event()
        self.acked: list[tuple[float, int]] = []  # (monotonic time of the ack, seq)
        self.asked: list[tuple[float, int]] = []  # (monotonic time the send was asked, seq)
        self.failures: list[Any] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            asked = time.monotonic()
            ack = self.client.sio.call("send_message", {"roomId": ROOM, "content": f"{self.client.name} {n}",
                                                        "clientMsgId": uuid.uuid4().hex}, timeout=WAIT)
            if ack and ack.get("success"):
                self.acked.append((time.monotonic(), ack["message"]["seq"]))
                self.asked.append((asked, ack["message"]["seq"]))
            else:
                self.failures.append(ack)
            time.sleep(0.005)


def seqs(client: Client, room: str = ROOM) -> list[int]:
    return [data["seq"] for data in client.received("room_message") if data.get("roomId") == room]


@pytest.mark.timeout(150)
def test_a_member_removed_while_connected_elsewhere_gets_nothing_committed_after_it(three: Grid):
    a, b, c = three.servers
    made: list[Client] = []

    def connect(name: str, server: Any, user: str) -> Client:
        client = Client(name)
        made.append(client)
        return client.connect(server.url, three.token(user))

    try:
        assert rest(three, a, "POST", "/rooms", "olive", json={"name": ROOM, "kind": "private"}).status_code == 201
        for user in ("mike", "sara", "tess"):
            added = rest(three, a, "POST", f"/rooms/{ROOM}/members", "olive", json={"userId": int(three.user_id(user))})
            assert added.status_code == 201, added.text

        olive, sara, tess = connect("olive@a", a, "olive"), connect("sara@b", b, "sara"), connect("tess@c", c, "tess")
        mikes = [connect("mike@b", b, "mike"), connect("mike@c", c, "mike"), connect("mike@b2", b, "mike")]
        for client in (olive, sara, tess, *mikes):
            assert client.sio.call("join_room", ROOM, timeout=WAIT)["success"]
        assert mikes[0].sio.call("typing_start", ROOM, timeout=WAIT)["success"]
        olive.wait_for("user_typing", lambda d: d["userId"] == three.user_id("mike") and d["isTyping"])

        # More senders where the member's sockets are: their own fan-out races the removal there.
        extra = [connect(f"{user}@{name}{i}", server, user) for i in range(SENDERS_EACH - 1)
                 for user, name, server in (("sara", "b", b), ("tess", "c", c))]
        for client in extra:
            assert client.sio.call("join_room", ROOM, timeout=WAIT)["success"]
        senders = [Sender(client) for client in (olive, sara, tess, *extra)]
        for sender in senders:
            sender.start()
        # Messages flow and reach the member everywhere before the removal.
        wait_until(lambda: all(len(seqs(m)) >= 30 for m in mikes), 20, "messages did not flow to the member")

        before_request = max(seq for sender in senders for _, seq in sender.acked)
        asked_at = time.monotonic()
        answer = rest(three, a, "DELETE", f"/rooms/{ROOM}/members/{three.user_id('mike')}", "olive")
        answered_at = time.monotonic()
        assert answer.status_code == 200, answer.text
        cutoff = answer.json()["lastSeq"]
        # Traffic goes on well past the removal.
        wait_until(lambda: len([s for sender in senders for t, s in sender.acked if t > answered_at]) >= 200, 30,
                   "messages stopped after the removal")
        after_answer = min(s for sender in senders for t, s in sender.acked if t > answered_at + 0.05)
        for sender in senders:
            sender.stop.set()
        for sender in senders:
            sender.join(WAIT)
        assert not any(sender.failures for sender in senders), [sender.failures for sender in senders]
        last = max(seq for sender in senders for _, seq in sender.acked)
        assert before_request <= cutoff < after_answer <= last
        print(f"removal at seq {cutoff} (acked before the request: {before_request}, first acked after the "
              f"answer: {after_answer}, last: {last}); the removal took {answered_at - asked_at:.3f}s")

        for mike in mikes:
            removed = mike.wait_for("removed_from_room")
            assert removed == {"roomId": ROOM, "room": ROOM, "reason": "removed", "lastSeq": cutoff}
            got = seqs(mike)
            assert got and max(got) <= cutoff, f"{mike.name} got seqs above {cutoff}: {[s for s in got if s > cutoff]}"
            assert len(got) == len(set(got))

        # The others got everything, once each, in order.
        for other in (olive, sara, tess):
            wait_until(lambda: last in seqs(other), WAIT, f"{other.name} did not get seq {last}")
            assert seqs(other) == list(range(seqs(other)[0], last + 1)), other.name
        # The member's typing was announced stopped, and the member left.
        olive.wait_for("user_typing", lambda d: d["userId"] == three.user_id("mike") and not d["isTyping"])
        olive.wait_for("room_left", lambda d: d["user"]["username"] == "mike")

        # No way back: join_room, history (socket and REST), catch-up on connect, on every instance.
        for mike in mikes:
            assert mike.sio.call("join_room", ROOM, timeout=WAIT)["error"]["code"] == "FORBIDDEN"
            history = mike.sio.call("get_history", {"roomId": ROOM}, timeout=WAIT)
            assert history["error"]["code"] == "FORBIDDEN"
        fresh = Client("mike@a")
        made.append(fresh)
        fresh.sio.connect(a.url, auth={"token": three.token("mike"), "since": {ROOM: 0}},
                          transports=["websocket"], wait_timeout=10)
        assert fresh.sio.transport() == "websocket"
        fresh.wait_for("connected")
        assert fresh.sio.call("join_room", {"room": ROOM, "since": 0}, timeout=WAIT)["error"]["code"] == "FORBIDDEN"
        assert rest(three, c, "GET", f"/rooms/{ROOM}/messages", "mike").status_code == 403
        olive.sio.call("send_message", {"roomId": ROOM, "content": "the last word"}, timeout=WAIT)
        olive.wait_for("room_message", lambda d: d["content"] == "the last word")
        assert fresh.received("room_message") == []
        for mike in mikes:
            assert max(seqs(mike)) <= cutoff
    finally:
        close_all(made)


@pytest.mark.timeout(120)
def test_a_user_banned_while_connected_elsewhere_gets_nothing_sent_after_the_ban(three: Grid):
    """The ban is answered once every instance took the user's sockets out of their rooms: a message
    whose sending began after the answer never reaches them (it was committed after the ban)."""
    room = "ban-watch"
    a, b, c = three.servers
    made: list[Any] = []

    def connect(name: str, server: Any, user: str) -> Client:
        client = Client(name)
        made.append(client)
        return client.connect(server.url, three.token(user))

    try:
        sara, tess = connect("sara@b", b, "sara"), connect("tess@c", c, "tess")
        bills = [connect("bill@b", b, "bill"), connect("bill@c", c, "bill")]
        for client in (sara, tess, *bills):
            assert client.sio.call("join_room", room, timeout=WAIT)["success"]
        admin = AdminClient().connect(a.url, three.token("root"))
        made.append(admin)

        class RoomSender(Sender):
            def run(self) -> None:
                n = 0
                while not self.stop.is_set():
                    n += 1
                    asked = time.monotonic()
                    ack = self.client.sio.call("send_message", {"roomId": room, "content": f"{n}"}, timeout=WAIT)
                    if ack and ack.get("success"):
                        self.asked.append((asked, ack["message"]["seq"]))
                    else:
                        self.failures.append(ack)
                    time.sleep(0.005)

        senders = [RoomSender(client) for client in (sara, tess)]
        for sender in senders:
            sender.start()
        wait_until(lambda: all(len(seqs(bill, room)) >= 20 for bill in bills), 20, "messages did not flow")
        assert admin.call("ban_user", {"userId": int(three.user_id("bill"))})["success"]
        answered_at = time.monotonic()
        wait_until(lambda: len([s for sender in senders for t, s in sender.asked if t > answered_at]) >= 40, 20,
                   "messages stopped after the ban")
        for sender in senders:
            sender.stop.set()
        for sender in senders:
            sender.join(WAIT)
        assert not any(sender.failures for sender in senders)
        after = {seq for sender in senders for asked, seq in sender.asked if asked > answered_at}
        for bill in bills:
            removed = bill.wait_for("removed_from_room")
            assert (removed["roomId"], removed["reason"]) == (room, "banned")
            assert bill.wait_for("session_revoked")["reason"] == "banned"
            leaked = sorted(after & set(seqs(bill, room)))
            assert not leaked, f"{bill.name} got messages sent after the ban: {leaked}"
        last = max(after)
        for other in (sara, tess):
            wait_until(lambda: last in seqs(other, room), WAIT, f"{other.name} did not get seq {last}")
            assert seqs(other, room) == list(range(seqs(other, room)[0], last + 1)), other.name
    finally:
        close_all(made)
