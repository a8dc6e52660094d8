"""An instance stopping or dying under clients, behind deploy/nginx.conf.

- SIGTERM with connections that clients hold open (idle kept-alive HTTP, a request that never
  finishes arriving, a long-polling GET, a WebSocket that answers nothing): the worker has exited
  by the end of NEXUS_SHUTDOWN_GRACE_S, gunicorn's master never kills it, and the WebSocket
  clients are told and come back through nginx on the other instance.
- SIGKILL, restart, SIGKILL, SIGKILL: nginx never answers 502 to a REST call while an instance
  is up (with `max_fails=3 fail_timeout=10s` in the upstream it does, for seconds, with the
  restarted instance up), and the socket clients are back within 5 s each time.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio

from tests.support import services
from tests.support.nginx import Nginx
from tests.support.scale import Tab, close_all, grid, instance_pid, wait_until, wait_until_ready

pytestmark = pytest.mark.live

GRACE_S = 4
#: What the worker may take beyond the grace to be gone (process teardown, the master's reaping).
EXIT_SLACK_S = 0.75
BACK_WITHIN_S = 5.0
AFTER_KILL_S = 4.0


# -- clients that hold connections open -------------------------------------------------------


TCP_CLOSED_BY_PEER = {7, 8}  # TCP_CLOSE (reset) and TCP_CLOSE_WAIT (the peer's FIN came)


class RawConnection:
    """A TCP connection to an instance, driven by hand; it notices when the server ends it, without
    reading anything (the kernel's view of the connection, so a peer that never reads is watched too)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.closed_at: float | None = None

    def request(self, path: str, token: str | None = None) -> bytes:
        """One whole HTTP/1.1 request, kept alive; returns the response's head (its body read too)."""
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        while len(body) < length:
            body += self.sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"connection: close" not in head.lower()
        return head

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def wait_read_by_server(self, timeout: float = 5.0) -> None:
        """Wait until the server has read everything sent so far: the receive queue of its end of
        this connection (the kernel's /proc/net/tcp row for it) is empty. A drain tells a request
        still waiting in that queue (served, then the connection closes) from one the server is
        reading (cut at once), so a test must know which it holds."""
        local_port = self.sock.getsockname()[1]
        server_port = self.sock.getpeername()[1]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, queues = fields[1], fields[2], fields[4]
                if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == local_port:
                    if int(queues.split(":")[1], 16) == 0:
                        return
                    break
            time.sleep(0.01)
        raise AssertionError("the server never read what this connection sent")

    def ended_by_server(self) -> bool:
        state = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
        return state in TCP_CLOSED_BY_PEER

    def unread(self) -> bytes:
        """Whatever the server sent that this side has not read (the connection being over)."""
        self.sock.settimeout(1)
        data = b""
        try:
            while chunk := self.sock.recv(65536):
                data += chunk
        except OSError:
            pass
        return data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def watch_until_ended(connections: list[RawConnection], stop: threading.Event) -> threading.Thread:
    """Note, every 10 ms, when each connection was ended by the server."""
    def run() -> None:
        while not stop.is_set() and any(conn.closed_at is None for conn in connections):
            for conn in connections:
                if conn.closed_at is None and conn.ended_by_server():
                    conn.closed_at = time.monotonic()
            stop.wait(0.01)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def silent_websocket(port: int) -> RawConnection:
    """An engine.io WebSocket that opens and then answers nothing: no pong, no close frame, no reads."""
    conn = RawConnection(port)
    conn.send(b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data or b'"sid"' not in data:  # the 101, then engine.io's open packet
        data += conn.sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 101"), data[:200]
    return conn


def worker_gone(pid: int) -> bool:
    """The process is gone, or a zombie its master has not reaped yet (it has exited either way)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


class RestPoller:
    """GETs through nginx, back to back, recording every answer (status or failure) with its time."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.answers: list[tuple[float, str, int | str, float]] = []  # (when, path, status, seconds taken)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "RestPoller":
        self._thread.start()
        return self

    def _run(self) -> None:
        paths = ["/api/rooms", "/api/users/online", "/health"]
        headers = {"Authorization": "Bearer " + self.token}
        with requests.Session() as session:  # kept alive to nginx, as a browser would
            n = 0
            while not self._stop.is_set():
                path = paths[n % len(paths)]
                n += 1
                asked = time.monotonic()
                try:
                    status: int | str = session.get(self.url + path, headers=headers, timeout=10).status_code
                except requests.RequestException as exc:
                    status = type(exc).__name__
                self.answers.append((time.monotonic(), path, status, time.monotonic() - asked))
                self._stop.wait(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def bad(self) -> list[tuple[float, str, int | str, float]]:
        return [answer for answer in self.answers if answer[2] != 200]


# -- SIGTERM with connections held open -------------------------------------------------------


@pytest.mark.timeout(150)
def test_sigterm_exits_within_the_grace_whatever_clients_hold_open(tmp_path):
    names = [f"tab{i}" for i in range(6)] + ["poller"]
    with grid(tmp_path, queue_url=services.REDIS_URL, ids=["term-a", "term-b"], users={n: {} for n in names},
              env={"NEXUS_SHUTDOWN_GRACE_S": str(GRACE_S), "NEXUS_TRUSTED_PROXIES": "1",
                   "NEXUS_HTTP_RATE_LIMIT": "100000 per minute"}) as g:
        proxy = Nginx(tmp_path, [server.port for server in g.servers])
        tabs: list[Tab] = []
        held: list[RawConnection] = []
        polling = socketio.Client(reconnection=False)
        rest: RestPoller | None = None
        try:
            for name in names[:-1]:
                tabs.append(Tab(name, g.token(name)).open(proxy.url))
            serving = {tab.welcome["instanceId"] for tab in tabs}
            assert len(serving) == 1, serving  # ip_hash: one client address, one instance
            victim_id = serving.pop()
            victim = g.by_id(victim_id)
            survivor_id = next(s.instance_id for s in g.servers if s.instance_id != victim_id)
            # nginx keeps idle upstream connections to the victim too (its `keepalive` pool).
            with requests.Session() as session:
                for _ in range(10):
                    assert session.get(proxy.url + "/api/rooms", timeout=5,
                                       headers={"Authorization": "Bearer " + g.token("tab0")}).status_code == 200

            idle = [RawConnection(victim.port) for _ in range(3)]
            for conn in idle:  # one request each, answered, then silence on a kept-alive connection
                conn.request("/health")
                conn.request("/api/rooms", g.token("tab0"))
            half = RawConnection(victim.port)
            half.send(b"GET /api/rooms HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthori")  # and never the rest
            half.wait_read_by_server()
            mute = silent_websocket(victim.port)
            held = [*idle, half, mute]
            watching = threading.Event()
            watch_until_ended(held, watching)
            notices: list[Any] = []
            polling.on("server_shutdown", notices.append)
            polling.connect(victim.url, auth={"token": g.token("poller")}, transports=["polling"], wait_timeout=10)
            assert polling.transport() == "polling"
            time.sleep(0.3)  # settle: the long-polling GET is now waiting in the application

            rest = RestPoller(proxy.url, g.token("poller")).start()  # REST through nginx all along
            wait_until(lambda: len(rest.answers) >= 20, 10, "the REST poller never got going")
            worker = instance_pid(victim)
            started = time.monotonic()
            victim.process.send_signal(signal.SIGTERM)
            wait_until(lambda: worker_gone(worker), GRACE_S + 5, "the worker outlived the grace")
            worker_exit = time.monotonic() - started
            assert victim.process.wait(GRACE_S + 5) == 0
            master_exit = time.monotonic() - started

            # Idle kept-alive connections (and the half-sent request) are closed by the drain at
            # once, not at the end of the grace.
            wait_until(lambda: all(conn.closed_at for conn in held), 5, "a held connection was never closed")
            idle_closed = max(conn.closed_at - started for conn in idle + [half])
            log = victim.log()
            print(f"\nSIGTERM with {len(idle)} idle kept-alive, 1 half-sent, 1 long-polling and 1 silent WebSocket "
                  f"connection(s) and {len(tabs)} WebSocket clients: idle ones closed after {idle_closed:.2f} s, "
                  f"worker gone after {worker_exit:.2f} s, master after {master_exit:.2f} s (grace {GRACE_S} s)")
            assert idle_closed < 1.5, idle_closed
            assert worker_exit < GRACE_S + EXIT_SLACK_S, worker_exit
            assert master_exit < GRACE_S + 2 * EXIT_SLACK_S, master_exit
            assert f"Worker exiting (pid: {worker})" in log
            for sign in ("was sent SIGKILL", "was sent SIGTERM", "Worker timeout", "Worker graceful timeout",
                         "Traceback"):
                assert sign not in log, sign
            assert "idleClosed" in log and "'idleClosed': 0" not in log
            assert "end of the shutdown grace: cut" in log  # the silent WebSocket, cut at the end
            assert half.unread() == b""  # a request cut short gets no 400: the connection just ends
            assert notices and notices[0]["reconnectAfterMs"] > 0

            for tab in tabs:  # told, and back through nginx on the other instance
                assert tab.wait_for("server_shutdown")["reconnectAfterMs"] > 0
                again = tab.wait_for("connected", lambda w: w["instanceId"] == survivor_id, timeout=BACK_WITHIN_S + 5)
                assert again["instanceId"] == survivor_id
                assert tab.sio.transport() == "websocket"
            back = [tab.stamped("connected", started)[0] - started for tab in tabs]
            print(f"WebSocket clients back through nginx after {min(back):.2f}-{max(back):.2f} s")
            assert max(back) < BACK_WITHIN_S, back
            rest.stop()
            assert not rest.bad(), rest.bad()[:20]  # the draining instance's requests were passed on, never a 502
            assert sum(1 for answer in rest.answers if answer[0] > started) > 20
        finally:
            if rest is not None:
                rest.stop()
            if held:
                watching.set()
            for conn in held:
                conn.close()
            try:
                polling.disconnect()
            except Exception:  # noqa: BLE001 - its server is gone
                pass
            close_all(tabs)  # type: ignore[arg-type]
            proxy.stop()


# -- SIGKILL, restart, SIGKILL through the deploy sample --------------------------------------


def kill(server: Any) -> None:
    """SIGKILL the whole instance (gunicorn's master and its worker), as a crash or the OOM killer would."""
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(10)


def kill_restart_kill(tmp_path: Path, tabs_count: int = 8) -> dict[str, Any]:
    """The scenario of the test below; returns what it saw (for the test, and to compare nginx setups).

    Three instances behind nginx; socket clients and a REST poller through it (all on the instance
    their address hashes to). SIGKILL the serving instance X, restart X at once, SIGKILL the
    instance now serving (Y), then the third one (Z): from there X alone is up, a few seconds after
    it died, which is when a proxy that marks instances down (max_fails) still counts it dead."""
    names = [f"kr{i}" for i in range(tabs_count)] + ["rest"]
    with grid(tmp_path, queue_url=services.REDIS_URL, ids=["kr-a", "kr-b", "kr-c"], users={n: {} for n in names},
              env={"NEXUS_TRUSTED_PROXIES": "1", "NEXUS_HTTP_RATE_LIMIT": "1000000 per minute"}) as g:
        proxy = Nginx(tmp_path, [server.port for server in g.servers])
        tabs: list[Tab] = []
        poller = RestPoller(proxy.url, g.token("rest"))
        seen: dict[str, Any] = {"back": [], "killed": []}
        events: list[tuple[str, float]] = []

        def kill_and_come_back(victim_id: str) -> None:
            victim = g.by_id(victim_id)
            on_victim = [tab for tab in tabs if serving_instance(tab) == victim_id]
            welcomes = {tab.name: len(tab.received("connected")) for tab in on_victim}
            killed_at = time.monotonic()
            kill(victim)
            events.append((f"killed {victim_id}", killed_at))
            seen["killed"].append(victim_id)
            for tab in on_victim:
                wait_until(lambda t=tab: len(t.received("connected")) > welcomes[t.name], BACK_WITHIN_S + 10,
                           f"{tab.name} did not come back")
                assert serving_instance(tab) != victim_id
                assert tab.sio.transport() == "websocket"
            if on_victim:
                seen["back"].append(max(tab.stamped("connected", killed_at)[0] - killed_at for tab in on_victim))

        try:
            for name in names[:-1]:
                tabs.append(Tab(name, g.token(name), delay=0.2).open(proxy.url))
            poller.start()
            wait_until(lambda: len(poller.answers) >= 20, 10, "the REST poller never got going")

            serving = {serving_instance(tab) for tab in tabs}
            assert len(serving) == 1, serving  # ip_hash: one client address, one instance
            first = serving.pop()
            kill_and_come_back(first)
            # The same instance again, on its port and with its id, as a supervisor restarts it.
            events.append((f"restarting {first}", time.monotonic()))
            dead = g.by_id(first)
            restarted = g.factory.start(g.database_url, kind="procfile", port=dead.port, wait=False,
                                        env={**g.env, "NEXUS_INSTANCE_ID": first})
            restarted.instance_id = first
            g.servers[g.servers.index(dead)] = restarted
            restarted.wait_ready(45)
            wait_until_ready(restarted)
            events.append((f"{first} ready", time.monotonic()))

            serving = {serving_instance(tab) for tab in tabs}
            assert len(serving) == 1 and first not in serving, serving
            second = serving.pop()
            kill_and_come_back(second)
            third = next(s.instance_id for s in g.servers if s.instance_id not in (first, second))
            kill_and_come_back(third)
            last_kill = time.monotonic()
            # Only the restarted instance is left: REST goes on through nginx for a while.
            wait_until(lambda: poller.answers[-1][0] > last_kill + AFTER_KILL_S, AFTER_KILL_S + 10,
                       "the REST poller stalled")
            assert {serving_instance(tab) for tab in tabs} == {first}
            assert all(tab.sio.connected and tab.sio.transport() == "websocket" for tab in tabs)
            poller.stop()
            seen["answers"] = len(poller.answers)
            seen["slowest"] = max(poller.answers, key=lambda a: a[3])
            seen["events"] = events
            seen["span"] = poller.answers[-1][0] - poller.answers[0][0]
            seen["bad"] = poller.bad()
            seen["nginx"] = (proxy.prefix / "stderr.log").read_text(errors="replace")
            return seen
        finally:
            poller.stop()
            close_all(tabs)  # type: ignore[arg-type]
            proxy.stop()


def serving_instance(tab: Tab) -> str:
    """The instance that sent this tab's latest `connected`."""
    return tab.received("connected")[-1]["instanceId"]


@pytest.mark.timeout(170)
def test_kill_restart_kill_through_the_deploy_sample_never_answers_502(tmp_path):
    seen = kill_restart_kill(tmp_path)
    first, second, third = seen["killed"]
    print(f"\nkill {first}, restart it, kill {second}, kill {third}: socket clients back in "
          f"{', '.join(f'{b:.2f}' for b in seen['back'])} s; {seen['answers']} REST GETs through nginx over "
          f"{seen['span']:.1f} s, {len(seen['bad'])} not 200; the slowest took {seen['slowest'][3]:.2f} s")
    assert seen["answers"] > 100, seen["answers"]
    assert not seen["bad"], seen["bad"][:20]
    assert "no live upstreams" not in seen["nginx"]
    assert len(seen["back"]) >= 2 and all(back < BACK_WITHIN_S for back in seen["back"]), seen["back"]
