"""Password checks run off the event loop: a burst of logins on a real server leaves a control
client's `ping` answered promptly (scrypt takes about 100 ms a check; on the loop, every connection
of the worker would wait for each one)."""
from __future__ import annotations

import statistics
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import socketio


LOGINS = 20
#: The control client's ping p99 during the burst. With the checks on the loop a ping waits behind
#: all of them (about 2 s for 20); off the loop it is 10-30 ms here. The target is 50 ms; the test
#: allows 100 ms so that a busy shared 2-core runner does not fail it, still 20 times below the loop's.
P99_LIMIT_S = 0.1


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


@pytest.fixture
def server(live_server):
    url, seeder = live_server.database()
    seeder.user("control")
    for index in range(LOGINS):
        seeder.user(f"login{index}")
    server = live_server.start(url, env={"NEXUS_LOGIN_RATE_LIMIT": "1000 per minute",
                                         "NEXUS_HTTP_RATE_LIMIT": "1000 per minute"})
    server.seeder = seeder
    return server


@pytest.mark.live
def test_a_burst_of_logins_leaves_pings_prompt(server):
    control = socketio.Client(reconnection=False)
    control.connect(server.url, transports=["websocket"], auth={"token": server.seeder.token("control")},
                    wait_timeout=10)
    try:
        for _ in range(5):  # warm up: the first acks are slower
            assert control.call("ping", timeout=5)["success"] is True

        rtts: list[float] = []
        burst_over = threading.Event()

        def pinger() -> None:
            while not burst_over.is_set():
                started = time.perf_counter()
                assert control.call("ping", timeout=10)["success"] is True
                rtts.append(time.perf_counter() - started)
                time.sleep(0.005)

        def login(index: int) -> int:
            # Right and wrong passwords, and an unknown user: every path checks a hash.
            username, password = (f"login{index}", "correct-horse-1") if index % 4 else (f"login{index}", "wrong")
            if index == 0:
                username = "nobody"
            response = requests.post(server.url + "/api/auth/login", json={"username": username, "password": password},
                                     timeout=60)
            return response.status_code

        ping_thread = threading.Thread(target=pinger)
        ping_thread.start()
        time.sleep(0.2)
        started = time.perf_counter()
        with ThreadPoolExecutor(LOGINS) as pool:
            statuses = list(pool.map(login, range(LOGINS)))
        took = time.perf_counter() - started
        burst_over.set()
        ping_thread.join(15)
    finally:
        control.disconnect()

    assert statuses.count(200) == LOGINS - LOGINS // 4 and statuses.count(401) == LOGINS // 4, statuses
    # The burst lasted long enough to matter: at least a few checks' worth, with pings all along.
    assert took > 0.3 and len(rtts) >= 20, (took, len(rtts))
    p99, median = percentile(rtts, 0.99), statistics.median(rtts)
    print(f"\n{LOGINS} logins in {took:.2f}s; control pings: n={len(rtts)} median={median * 1000:.1f} ms "
          f"p99={p99 * 1000:.1f} ms max={max(rtts) * 1000:.1f} ms")
    assert p99 < P99_LIMIT_S, f"ping p99 {p99 * 1000:.1f} ms during {LOGINS} logins (median {median * 1000:.1f} ms)"


def test_without_gevent_a_check_runs_in_the_calling_thread():
    from nexus.services import users

    caller = threading.get_ident()
    assert users._off_the_loop(threading.get_ident) == caller
    stored = users.hash_password("correct-horse-1")
    assert users.password_matches(stored, "correct-horse-1") and not users.password_matches(stored, "wrong")


GEVENT_PROBE = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import os, threading, time
    import gevent
    from nexus.services import users

    ticks = []
    def ticker():
        while True:
            ticks.append(time.perf_counter())
            gevent.sleep(0.005)
    gevent.spawn(ticker)
    gevent.sleep(0.02)
    started = time.perf_counter()
    jobs = [gevent.spawn(users.hash_password, "correct-horse-1") for _ in range(4)]
    gevent.joinall(jobs, raise_error=True)
    took = time.perf_counter() - started
    during = [b - a for a, b in zip(ticks, ticks[1:]) if a >= started and b <= started + took]
    assert users.password_matches(jobs[0].value, "correct-horse-1")
    assert users._off_the_loop(threading.get_ident) != threading.get_ident()  # a native pool thread
    pid = os.fork()
    if pid == 0:  # a forked worker gets a pool of its own
        os._exit(0 if users.password_matches(jobs[1].value, "correct-horse-1") else 1)
    assert os.waitpid(pid, 0)[1] == 0
    print(f"took={took:.3f} ticks={len(during)} longest_gap={max(during):.3f}")
    assert len(during) >= 10 and max(during) < 0.05, (took, len(during), max(during))
""")


def test_under_gevent_checks_run_in_a_thread_pool_and_the_loop_keeps_turning():
    result = subprocess.run([sys.executable, "-c", GEVENT_PROBE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
