"""The benchmark runs end to end: bench/run.py --quick against Nexus, the Node reference and the two Python
peers gives figures for each.

Speed is never asserted here: the targets live in the benchmark's table, not in tests.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import services

pytestmark = [pytest.mark.live, pytest.mark.node]

SERVERS = ("nexus", "node", "flask", "asgi")


def run_quick(tmp_path: Path, scenarios: str, targets: tuple[str, ...], timeout: float) -> tuple[str, dict[str, Any]]:
    """bench/run.py --quick on SQLite; returns the table printed and the JSON document."""
    if not (services.ROOT / "node_modules" / "socket.io").is_dir():
        pytest.fail("node_modules/socket.io is missing: run `npm ci`")
    output = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--database", "sqlite", "--scenarios", scenarios,
         "--targets", ",".join(targets), "--output", str(output), "--work-dir", str(tmp_path / "work"),
         "--label", "smoke test"],
        cwd=services.ROOT, capture_output=True, text=True, timeout=timeout,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    return done.stdout, json.loads(output.read_text())


def assert_ran(result: dict[str, Any]) -> None:
    assert "failure" not in result, result
    assert "carriedFrom" not in result, result
    assert isinstance(result["genCpuPercent"], (int, float))
    assert result["errors"]["notWebsocket"] == 0
    assert isinstance(result["server"]["serverCpuSeconds"], (int, float))


@pytest.mark.timeout(200)
def test_quick_benchmark_reports_numbers_for_every_server(tmp_path):
    services.require("node")
    services.require("postgres")  # the Node reference stores the persisted chat's messages there
    table, document = run_quick(tmp_path, "a,b,d,g,h", SERVERS, timeout=190)
    assert "fan-out deliveries/s" in table and "Nexus/Flask-SocketIO" in table

    assert document["meta"]["label"] == "smoke test"
    assert document["meta"]["pinning"]["server"].startswith(("taskset", "none"))
    parameters, runs = document["parameters"], document["runs"]
    for target in SERVERS:
        connect, fanout, rtt, storm = (runs[key][target] for key in ("a", "b", "d", "h"))
        for result in (connect, fanout, rtt, storm):
            assert_ran(result)
        assert connect["connected"] == connect["requested"] == parameters["clients"]
        assert isinstance(connect["connectSeconds"], (int, float))
        assert isinstance(connect["memoryPerConnectionKiB"], (int, float))
        assert fanout["deliveries"] > 0 and fanout["deliveries"] == fanout["deliveriesExpected"]
        assert fanout["deliveriesPerSecond"] > 0
        assert fanout["latencyMs"]["p99"] is not None and fanout["serverCpuUsPerDelivery"] > 0
        assert not fanout["errors"]["ack"]
        assert rtt["roundTrips"] > 0 and rtt["latencyMs"]["p50"] is not None
        # The storm: every client back, the control client pinged throughout and stayed connected.
        assert storm["connectedBefore"] == storm["reconnected"] == parameters["stormClients"]
        assert isinstance(storm["reconnectSeconds"], (int, float))
        assert storm["controlPings"] > 0 and storm["controlUnanswered"] == 0
        assert storm["controlStayedConnected"] is True
        assert storm["controlPingMs"]["p99"] is not None
    rows = {(row["scenario"], row["metric"]): row for row in document["table"]}
    assert ("b", "fan-out deliveries/s") in rows and ("d", "round trips/s") in rows
    storm_row = rows[("h", f"time until all {parameters['stormClients']:,} are back (s)")]
    assert set(storm_row["values"]) == set(SERVERS) and all(v is not None for v in storm_row["values"].values())
    assert all(storm_row["ratios"][peer] is not None for peer in ("node", "flask", "asgi"))

    # Persisted chat: Nexus on its (here SQLite) database, Node storing in PostgreSQL; the Python peers
    # have no database and are left out (shown as "—").
    assert set(runs["g"]) == {"nexus", "node"}
    for target in ("nexus", "node"):
        chat = runs["g"][target]
        assert_ran(chat)
        assert chat["clients"] == chat["joined"] == parameters["chatClients"]
        assert chat["senders"] == parameters["chatSenders"]
        assert chat["acked"] > 0 and not chat["errors"]["ack"]
        assert chat["deliveries"] == chat["deliveriesExpected"] == chat["acked"] * chat["roomSize"]
        assert chat["messagesPerSecond"] > 0 and chat["ackLatencyMs"]["p99"] is not None
    chat_row = rows[("g", "acked messages/s")]
    assert chat_row["ratio"] is not None and {"flask", "asgi"} <= set(chat_row["absent"])
