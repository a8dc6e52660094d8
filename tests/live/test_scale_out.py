"""Three instances behave as one: each runs as the Procfile's `web` (gunicorn, one worker), all on
the machine's Redis (state and queue, a prefix of their own), a PostgreSQL database of their own
and a real Celery worker; python-socketio clients (WebSocket asserted) spread across them.

Most tests share one module-scoped set of three instances and use users of their own, so that
presence seen by one test is never another's. Rate limits (a small limit), RabbitMQ as the queue,
and SIGKILL behind nginx each get their own instances.
"""
from __future__ import annotations

import signal
import threading
import time
import uuid
from typing import Any, Iterator

import pytest
import requests
import socketio

from tests.live.test_admin_live import AdminClient
from tests.support import services
from tests.support.cluster import ABSENCE_WINDOW, Client, assert_none_receive
from tests.support.scale import Grid, Tab, close_all, grid, stored, wait_until

pytestmark = [pytest.mark.live, pytest.mark.redis, pytest.mark.postgres]

IDS = ["scale-a", "scale-b", "scale-c"]
WAIT = 10.0
TASK_TIMEOUT_S = 30

USERS: dict[str, dict[str, Any]] = {
    "root": {"role": "admin"},
    # room broadcast
    "rina": {}, "ravi": {}, "rosa": {},
    # direct messages
    "dina": {}, "dave": {},
    # presence
    "pam": {}, "paul": {}, "wendy": {}, "walt": {}, "pete": {},
    # catch-up
    "cate": {}, "sam": {},
    # admin stats
    "stan": {},
    # disconnect and ban
    "dora": {}, "bella": {}, "bert": {},
    # logout
    "lou": {},
    # the worker
    "nora": {}, "ned": {},
    # the official client
    "jess": {}, "jack": {},
}


@pytest.fixture(scope="module")
def three(tmp_path_factory) -> Iterator[Grid]:
    """scale-a, scale-b, scale-c on Redis (state and queue) and PostgreSQL, with a Celery worker."""
    with grid(tmp_path_factory.mktemp("scale"), queue_url=services.REDIS_URL, ids=IDS, users=USERS,
              worker=True) as the_grid:
        yield the_grid


@pytest.fixture
def tabs() -> Iterator:
    """Connect recording clients to an instance (WebSocket asserted); all closed at teardown."""
    made: list[Client] = []

    def connect(name: str, server: Any, token: str) -> Client:
        client = Client(name)
        made.append(client)
        return client.connect(server.url, token)

    yield connect
    close_all(made)


@pytest.fixture
def admins() -> Iterator:
    made: list[AdminClient] = []

    def connect(url: str, token: str) -> AdminClient:
        made.append(AdminClient().connect(url, token))
        return made[-1]

    yield connect
    close_all(made)  # type: ignore[arg-type]


def on(the_grid: Grid, name: str, tabs, where: str):
    """User `name` (before any "#") connected to instance a, b or c."""
    user = name.split("#")[0]
    server = the_grid.servers["abc".index(where)]
    client = tabs(f"{name}@{where}", server, the_grid.token(user))
    assert client.welcome["instanceId"] == server.instance_id
    return client


def from_user(user_id: str):
    return lambda data: data.get("userId") == user_id


# -- one set of three instances ----------------------------------------------------------


def test_room_broadcast_reaches_every_instance_exactly_once(three: Grid, tabs):
    room = f"lobby-{uuid.uuid4().hex[:8]}"
    rina, ravi, rosa = on(three, "rina", tabs, "a"), on(three, "ravi", tabs, "b"), on(three, "rosa", tabs, "c")
    for count, client in enumerate((rina, ravi, rosa), start=1):
        assert client.sio.call("join_room", room, timeout=WAIT)["memberCount"] == count
    sent = rina.sio.call("send_message", {"roomId": room, "content": "from A"}, timeout=WAIT)
    assert sent["success"], sent
    for receiver in (ravi, rosa):
        got = receiver.wait_for("room_message", lambda m: m["id"] == sent["messageId"])
        assert got == sent["message"]
    # One from each of the others too: every socket holds the three, once each, in seq order.
    for sender in (ravi, rosa):
        assert sender.sio.call("send_message", {"roomId": room, "content": "hi"}, timeout=WAIT)["success"]
    for client in (rina, ravi, rosa):
        wait_until(lambda: len(client.received("room_message")) >= 3, WAIT, lambda: f"{client}: {client.events}")
    for client in (rina, ravi, rosa):
        client.assert_count_stays("room_message", 3)
        assert [m["seq"] for m in client.received("room_message")] == [1, 2, 3]


def test_direct_message_reaches_every_tab_on_the_other_instances(three: Grid, tabs):
    dina_a, dina_c = on(three, "dina", tabs, "a"), on(three, "dina", tabs, "c")
    dave_b, dave_c = on(three, "dave", tabs, "b"), on(three, "dave", tabs, "c")
    dave_id = three.user_id("dave")
    sent = dina_a.sio.call("send_message", {"to": int(dave_id), "content": "psst"}, timeout=WAIT)
    assert sent["success"], sent
    for tab in (dave_b, dave_c, dina_c):  # the recipient's tabs and the sender's other one
        assert tab.wait_for("new_message")["id"] == sent["messageId"]
    for tab in (dave_b, dave_c, dina_c):
        tab.assert_count_stays("new_message", 1)
    dina_a.assert_count_stays("new_message", 0, window=0)
    reply = dave_c.sio.call("send_message", {"to": int(three.user_id("dina")), "content": "ok"}, timeout=WAIT)
    assert dina_a.wait_for("new_message", lambda m: m["id"] == reply["messageId"])["content"] == "ok"


def test_presence_and_online_lists_are_one_across_instances(three: Grid, tabs):
    pam_id, paul_id, wendy_id = three.user_id("pam"), three.user_id("paul"), three.user_id("wendy")
    wendy = on(three, "wendy", tabs, "c")
    walt = on(three, "walt", tabs, "b")
    pam_a = on(three, "pam", tabs, "a")
    for watcher in (wendy, walt):
        watcher.wait_for("user_online", from_user(pam_id))
    pam_b = on(three, "pam", tabs, "b")  # a second tab, on another instance: not announced again
    paul = on(three, "paul", tabs, "b")
    for watcher in (wendy, walt):
        watcher.wait_for("user_online", from_user(paul_id))
        assert [d["userId"] for d in watcher.received("user_online")].count(pam_id) == 1
    # The online list read on C has the users of A and B, once each (pam has two tabs).
    listed = [e["userId"] for e in wendy.sio.call("get_online_users", timeout=WAIT)["users"]]
    assert all(listed.count(uid) == 1 for uid in (pam_id, paul_id, wendy_id, three.user_id("walt"))), listed
    pete = on(three, "pete", tabs, "c")  # what a new connection on C is sent
    on_connect = [e["userId"] for e in pete.wait_for("online_users")]
    assert all(on_connect.count(uid) == 1 for uid in (pam_id, paul_id, wendy_id)), on_connect
    # Closing the tab on A leaves pam online through B; closing the last one, anywhere, does not.
    pam_a.sio.disconnect()
    deadline = time.monotonic() + 1.0  # (other tests' users may still be going offline: only pam counts)
    for watcher in (wendy, walt):
        assert not watcher.wait_for_any("user_offline", from_user(pam_id), max(0.0, deadline - time.monotonic()))
    assert pam_id in [e["userId"] for e in wendy.sio.call("get_online_users", timeout=WAIT)["users"]]
    pam_b.sio.disconnect()
    for watcher in (wendy, walt):
        offline = watcher.wait_for("user_offline", from_user(pam_id))
        assert offline["lastSeen"]
    time.sleep(ABSENCE_WINDOW)  # then no second user_offline (or user_online) for pam anywhere
    for watcher in (wendy, walt):
        assert [d["userId"] for d in watcher.received("user_offline")].count(pam_id) == 1
        assert [d["userId"] for d in watcher.received("user_online")].count(pam_id) == 1
    assert pam_id not in [e["userId"] for e in wendy.sio.call("get_online_users", timeout=WAIT)["users"]]
    assert paul.sio.transport() == "websocket"


def test_catch_up_after_moving_to_another_instance_is_exact(three: Grid, tabs):
    room = f"catchup-{uuid.uuid4().hex[:8]}"
    sam = on(three, "sam", tabs, "b")
    cate = Tab("cate@a", three.token("cate"), reconnect=False).open(three.servers[0].url)
    try:
        cate.join(room)
        assert sam.sio.call("join_room", room, timeout=WAIT)["success"]
        for i in range(3):
            assert sam.sio.call("send_message", {"roomId": room, "content": f"before {i}"}, timeout=WAIT)["success"]
        wait_until(lambda: cate.seen_up_to(room) == 3, WAIT, lambda: f"cate got {cate.seqs(room)}")
        cate.sio.disconnect()
        missed = [sam.sio.call("send_message", {"roomId": room, "content": f"missed {i}"}, timeout=WAIT)
                  for i in range(4)]
    finally:
        cate.close()
    back = Tab("cate@c", three.token("cate"), reconnect=False).open(three.servers[2].url, since={room: 3})
    try:
        assert back.welcome["instanceId"] == "scale-c"
        wait_until(lambda: len(back.seqs(room)) >= 4, WAIT, lambda: f"replayed {back.seqs(room)}")
        assert [m["id"] for m in back.received("room_message")] == [ack["messageId"] for ack in missed]
        live = sam.sio.call("send_message", {"roomId": room, "content": "after"}, timeout=WAIT)
        back.wait_for("room_message", lambda m: m["id"] == live["messageId"])
        back.assert_count_stays("room_message", 5)
        assert back.seqs(room) == [4, 5, 6, 7, 8]
    finally:
        back.close()


def test_admin_stats_see_the_three_instances_and_their_totals(three: Grid, tabs, admins):
    admin = admins(three.servers[0].url, three.token("root"))
    placement = {"a": 1, "b": 2, "c": 3}
    for where, count in placement.items():
        for n in range(count):
            on(three, f"stan#{n}", tabs, where)
    # A's own figure is live; the others' are the ones they posted, at most a few seconds old.
    expected = {"scale-a": 1 + 1, "scale-b": 2, "scale-c": 3}  # A also has the admin's /admin socket

    def settled():
        stats = admin.call("get_stats")["stats"]
        got = {s["instanceId"]: s["connections"] for s in stats["instances"]}
        return stats if got == expected and stats["totals"]["usersOnline"] == 2 else None

    stats = wait_until(settled, 15, lambda: f"stats never settled: {admin.call('get_stats')}")
    assert sorted(s["instanceId"] for s in stats["instances"]) == IDS
    totals = stats["totals"]
    assert totals["instances"] == 3
    assert totals["connections"] == sum(expected.values()) == 7
    assert totals["totalConnections"] >= totals["connections"]
    for instance in stats["instances"]:
        assert instance["byTransport"] == {"websocket": instance["connections"]}
        assert instance["usersOnline"] == 2  # root and stan: shared state, the same on every instance
        assert instance["memoryRss"] > 0
    pushed = admin.wait_count("stats", 2, timeout=8)[-1]
    assert sorted(s["instanceId"] for s in pushed["instances"]) == IDS


def test_disconnect_and_ban_from_a_close_sockets_on_b_and_c(three: Grid, tabs, admins):
    dora_b, dora_c = on(three, "dora", tabs, "b"), on(three, "dora", tabs, "c")
    bella_b, bella_c = on(three, "bella", tabs, "b"), on(three, "bella", tabs, "c")
    bert = on(three, "bert", tabs, "b")
    admin = admins(three.servers[0].url, three.token("root"))
    ack = admin.call("disconnect_user", {"userId": int(three.user_id("dora"))})
    assert ack["success"] and ack["disconnectedHere"] == 0
    for tab in (dora_b, dora_c):
        assert tab.wait_for("session_revoked")["reason"] == "disconnected by an administrator"
    ack = admin.call("ban_user", {"userId": int(three.user_id("bella"))})
    assert ack["success"] and ack["user"]["role"] == "banned"
    for tab in (bella_b, bella_c):
        assert tab.wait_for("session_revoked")["reason"] == "banned"
    wait_until(lambda: not any(t.sio.connected for t in (dora_b, dora_c, bella_b, bella_c)), WAIT,
               "the users' sockets were not closed")
    refused = Client("bella-again")
    with pytest.raises(socketio.exceptions.ConnectionError):
        refused.connect(three.servers[2].url, three.token("bella"))
    bert.assert_count_stays("session_revoked", 0, window=0)
    assert bert.sio.connected and bert.sio.call("ping", timeout=WAIT)["success"]


def test_a_token_logged_out_on_a_is_refused_by_b_at_once(three: Grid, tabs):
    # A token of its own: B has verified it (and keeps it for a few seconds) when it is logged out on A.
    token = three.seeder.token("lou")
    lou_b = tabs("lou@b", three.servers[1], token)
    answer = requests.post(three.servers[0].url + "/api/auth/logout", headers={"Authorization": f"Bearer {token}"},
                           timeout=WAIT)
    assert answer.status_code == 200 and answer.json()["success"]
    refused = Client("lou-again")
    with pytest.raises(socketio.exceptions.ConnectionError):
        refused.connect(three.servers[1].url, token)
    assert lou_b.wait_for("session_revoked")["reason"] == "logged out"
    wait_until(lambda: not lou_b.sio.connected, WAIT, "the logged-out socket was not closed")


def test_a_notification_from_the_celery_worker_reaches_a_user_on_c(three: Grid, tabs):
    nora_c, nora_b = on(three, "nora", tabs, "c"), on(three, "nora", tabs, "b")
    ned = on(three, "ned", tabs, "a")
    celery = three.celery()
    try:
        text_ = f"export ready {uuid.uuid4().hex}"
        result = celery.tasks["nexus.worker.send_notification"].delay(int(three.user_id("nora")), "Export", text_)
        sent = result.get(timeout=TASK_TIMEOUT_S)
    finally:
        celery.close()
    for tab in (nora_c, nora_b):
        assert tab.wait_for("notification", lambda n: n["message"] == text_) == sent
    assert sent["from"]["name"] == "service:worker"
    for tab in (nora_c, nora_b):
        tab.assert_count_stays("notification", 1)
    assert_none_receive("notification", ned, window=0)
    assert f"[{result.id}] succeeded" in three.worker.log()


@pytest.mark.node
def test_the_official_js_client_on_c_chats_with_a_python_client_on_a(three: Grid, tabs):
    services.require("node")
    from tests.live.test_js_client import run

    room = f"js-{uuid.uuid4().hex[:8]}"
    jack = on(three, "jack", tabs, "a")
    assert jack.sio.call("join_room", room, timeout=WAIT)["success"]

    def answer(message):
        if message["sender"]["username"] == "jess":
            jack.sio.emit("send_message", {"roomId": room, "content": "from python on A"})

    jack.sio.on("room_message", answer)
    report = run(
        three.servers[2],
        {"auth": {"token": three.token("jess")}, "transports": ["websocket"]},
        [
            {"emit": "join_room", "args": [room], "ack": True},
            {"emit": "send_message", "args": [{"roomId": room, "content": "from js on C"}], "ack": True},
            {"waitFor": "room_message", "count": 2},
        ],
        timeout_ms=15000,
    )
    assert report["transport"] == "websocket" and not report.get("timedOut"), report
    [welcome] = [event[1] for event in report["events"] if event[0] == "connected"]
    assert welcome["instanceId"] == "scale-c"
    seen = [event[1]["content"] for event in report["events"] if event[0] == "room_message"]
    assert seen == ["from js on C", "from python on A"]


# -- a small limit, on two instances of their own ------------------------------------------


def test_rate_limits_are_shared_a_user_on_two_instances_gets_the_sum(tmp_path):
    limit = 12
    env = {"SOCKETIO_RATE_LIMIT_MAX_REQUESTS": str(limit), "SOCKETIO_RATE_LIMIT_WINDOW_MS": "60000"}
    with grid(tmp_path, queue_url=services.REDIS_URL, ids=["limit-a", "limit-b"],
              users={"lena": {}, "otto": {}}, env=env) as pair:
        made: list[Client] = []
        try:
            for name, server in (("lena@a", pair.servers[0]), ("lena@b", pair.servers[1]),
                                 ("otto@a", pair.servers[0])):
                made.append(Client(name).connect(server.url, pair.token(name.split("@")[0])))
            lena_a, lena_b, otto = made
            answers = []
            for _ in range(limit // 2 + 1):  # ping costs 1: 7 on each socket, 14 in all
                for tab in (lena_a, lena_b):
                    answers.append((tab, tab.sio.call("ping", timeout=WAIT)))
            allowed = [ack for _, ack in answers if ack["success"]]
            refused = [(tab, ack) for tab, ack in answers if not ack["success"]]
            # Each socket sent 7 (under 12): only the shared count refuses anything.
            assert len(allowed) == limit and [tab for tab, _ in refused] == [lena_a, lena_b], answers
            for _, ack in refused:
                assert ack["error"]["code"] == "RATE_LIMITED" and ack["error"]["details"]["retryAfterMs"] > 0
            for tab in (lena_a, lena_b):
                notice = tab.wait_for("rate_limit_exceeded")
                assert notice["event"] == "ping" and notice["retryAfterMs"] > 0
            # Per user: someone else on the same instance is not limited.
            assert otto.sio.call("ping", timeout=WAIT)["success"]
            assert all(tab.sio.connected for tab in made)
        finally:
            close_all(made)


# -- RabbitMQ as the queue, Redis for state --------------------------------------------------


@pytest.mark.rabbitmq
def test_rabbitmq_queue_smoke_broadcast_direct_message_and_worker(tmp_path):
    users = {"ann": {}, "ben": {}, "cid": {}}
    with grid(tmp_path, queue_url=services.AMQP_URL, ids=["rabbit-a", "rabbit-b", "rabbit-c"], users=users,
              worker=True) as rabbit:
        made: list[Client] = []
        try:
            for name, server in zip(users, rabbit.servers):
                client = Client(f"{name}@{server.instance_id}").connect(server.url, rabbit.token(name))
                assert client.welcome["instanceId"] == server.instance_id
                made.append(client)
            ann, ben, cid = made
            for client in made:
                assert client.sio.call("join_room", "rabbit-room", timeout=WAIT)["success"]
            sent = ann.sio.call("send_message", {"roomId": "rabbit-room", "content": "over amqp"}, timeout=WAIT)
            for client in (ben, cid):
                assert client.wait_for("room_message", lambda m: m["id"] == sent["messageId"]) == sent["message"]
                client.assert_count_stays("room_message", 1)
            direct = ben.sio.call("send_message", {"to": int(rabbit.user_id("cid")), "content": "dm"}, timeout=WAIT)
            assert cid.wait_for("new_message")["id"] == direct["messageId"]
            celery = rabbit.celery()
            try:
                note = celery.tasks["nexus.worker.send_notification"].delay("cid", "Hi", "from the worker").get(
                    timeout=TASK_TIMEOUT_S)
            finally:
                celery.close()
            assert cid.wait_for("notification")["id"] == note["id"]
            assert_none_receive("notification", ann, ben)
            assert all(c.sio.transport() == "websocket" for c in made)
        finally:
            close_all(made)


# -- SIGKILL in the middle of traffic, behind nginx ------------------------------------------


CHATTERS = 20
KILL_ROOM = "busy"


def test_sigkill_mid_traffic_clients_move_catch_up_and_presence_heals(tmp_path):
    """kill -9 the instance that serves 20 chatting clients behind deploy/nginx.conf: they are back
    on the others within 5 s, catch up with `since`, no acknowledged message is lost, and the users
    who were only on the dead instance go offline everywhere within 15 s (the others stay online, once)."""
    from tests.support.nginx import Nginx

    chatters = [f"chat{i:02d}" for i in range(CHATTERS)]
    stranded = ["gone1", "gone2"]
    watchers = ["watch-a", "watch-b", "watch-c"]
    users = {name: {} for name in chatters + stranded + watchers}
    with grid(tmp_path, queue_url=services.REDIS_URL, ids=["kill-a", "kill-b", "kill-c"], users=users,
              env={"NEXUS_TRUSTED_PROXIES": "1"}) as g:
        proxy = Nginx(tmp_path, [server.port for server in g.servers])
        made: list[Tab] = []
        stop = threading.Event()
        acked: dict[str, int] = {}  # messageId -> seq
        acked_at: dict[int, float] = {}  # seq -> when its ack arrived
        refused: list[dict] = []
        acked_lock = threading.Lock()
        senders: list[threading.Thread] = []
        try:
            watching = {}
            for name, server in zip(watchers, g.servers):
                watching[server.instance_id] = Tab(name, g.token(name), reconnect=False).open(server.url)
                made.append(watching[server.instance_id])
            tabs = []
            for name in chatters:
                # The last one waits 2 s before it tries again: it surely misses what the others send.
                tab = Tab(name, g.token(name), delay=2.0 if name == chatters[-1] else 0.2).open(proxy.url)
                made.append(tab)
                tab.join(KILL_ROOM)
                tabs.append(tab)
            for name in stranded:  # these do not come back
                made.append(Tab(name, g.token(name), reconnect=False).open(proxy.url))
            serving = {tab.welcome["instanceId"] for tab in made if tab.name not in watchers}
            assert len(serving) == 1, serving  # ip_hash: one client address, one instance
            victim_id = serving.pop()
            victim = g.by_id(victim_id)
            survivors = [w for iid, w in watching.items() if iid != victim_id]
            ids = {name: g.user_id(name) for name in users}
            gone = stranded + [watching[victim_id].name]
            for watcher in survivors:  # every chatter and stranded user announced once before the kill
                for name in chatters + stranded:
                    watcher.wait_for("user_online", from_user(ids[name]))

            def chatter(tab: Tab, index: int) -> None:
                n = 0
                while not stop.is_set():
                    body = {"roomId": KILL_ROOM, "content": f"{index}-{n}", "clientMsgId": f"{index}-{n}"}
                    try:
                        ack = tab.sio.call("send_message", body, timeout=5)
                    except Exception:  # noqa: BLE001 - disconnected: the same clientMsgId again once back
                        time.sleep(0.05)
                        continue
                    if not ack["success"]:
                        refused.append(ack)
                        return
                    with acked_lock:
                        acked[ack["messageId"]] = ack["message"]["seq"]
                        acked_at[ack["message"]["seq"]] = time.monotonic()
                    n += 1
                    stop.wait(0.4)

            senders = [threading.Thread(target=chatter, args=(tab, i), daemon=True) for i, tab in enumerate(tabs)]
            for sender in senders:
                sender.start()
            wait_until(lambda: len(acked) >= 60, 30, "the chatter never got going")

            killed_at = time.monotonic()
            victim.stop(signal.SIGKILL)
            for tab in tabs:
                tab.wait_for("connected", lambda w: w["instanceId"] != victim_id, timeout=15)
            back_after = [tab.stamped("connected", killed_at)[0] - killed_at for tab in tabs]
            acked_at_kill = len(acked)
            # Users only on the dead instance go offline on the others.
            for watcher in survivors:
                for name in gone:
                    watcher.wait_for("user_offline", from_user(ids[name]), timeout=20)
            healed_after = max(
                at - killed_at
                for watcher in survivors
                for (event, at), (_, data) in zip(watcher.stamps, watcher.events)
                if event == "user_offline" and data["userId"] in {ids[name] for name in gone}
            )
            wait_until(lambda: len(acked) >= acked_at_kill + 40, 20, "the chatter did not resume")
            stop.set()
            for sender in senders:
                sender.join(10)
            # What was acknowledged while a client was away can only reach it through the replay.
            away = [{seq for seq, at in acked_at.items() if killed_at < at < killed_at + back} for back in back_after]
            print(f"\nSIGKILL of {victim_id}: clients back in {min(back_after):.2f}-{max(back_after):.2f} s; "
                  f"presence corrected in {healed_after:.2f} s; {len(acked)} acknowledged messages, "
                  f"{len(away[-1])} of them while the slowest client was away")
            assert max(back_after) < 5.0, back_after
            assert healed_after < 15.0, healed_after
            assert away[-1], "the slow client missed nothing: the catch-up was not exercised"

            assert not refused, refused
            # No acknowledged message is lost: stored, and seen by every client after its catch-up.
            assert stored(g.database_url, set(acked)) == set(acked)
            wanted = set(acked.values())
            for tab in tabs:
                wait_until(lambda: wanted <= set(tab.seqs(KILL_ROOM)), 15,
                           lambda: f"{tab.name} misses {sorted(wanted - set(tab.seqs(KILL_ROOM)))[:20]}")
                assert tab.sent_since, f"{tab.name} reconnected without `since`"
                seqs = tab.seqs(KILL_ROOM)
                assert len(seqs) == len(set(seqs)), f"{tab.name} got repeats: {sorted(s for s in seqs if seqs.count(s) > 1)}"
                assert tab.sio.transport() == "websocket"

            # Presence: the users who came back are online, once; the others are not.
            for watcher in survivors:
                for name in chatters:
                    assert [d["userId"] for d in watcher.received("user_offline")].count(ids[name]) == 0
                    assert [d["userId"] for d in watcher.received("user_online")].count(ids[name]) == 1, name
                assert [d["userId"] for d in watcher.received("user_offline")].count(ids[gone[0]]) == 1
                listed = [e["userId"] for e in watcher.sio.call("get_online_users", timeout=WAIT)["users"]]
                assert all(listed.count(ids[name]) == 1 for name in chatters), listed
                assert not {ids[name] for name in gone} & set(listed), listed
                offline_for = {d["userId"] for d in watcher.received("user_offline")}
                assert offline_for == {ids[name] for name in gone}, offline_for
        finally:
            stop.set()
            for sender in senders:
                sender.join(5)
            close_all(made)  # type: ignore[arg-type]
            proxy.stop()
