"""The benchmark runs end to end: bench/run.py --quick against Nexus and Node gives figures for each.

Speed is never asserted here: the targets live in the benchmark's table, not in tests.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import services

pytestmark = [pytest.mark.live, pytest.mark.node]


@pytest.mark.timeout(150)
def test_quick_benchmark_reports_numbers_for_both_servers(tmp_path):
    services.require("node")
    if not (services.ROOT / "node_modules" / "socket.io").is_dir():
        pytest.fail("node_modules/socket.io is missing: run `npm ci`")
    output = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--database", "sqlite", "--scenarios", "a,b,d",
         "--targets", "nexus,node", "--output", str(output), "--work-dir", str(tmp_path / "work"), "--label", "smoke test"],
        cwd=services.ROOT, capture_output=True, text=True, timeout=140,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    assert "fan-out deliveries/s" in done.stdout  # the table

    document = json.loads(output.read_text())
    assert document["meta"]["label"] == "smoke test"
    assert document["meta"]["pinning"]["server"].startswith(("taskset", "none"))
    runs = document["runs"]
    for target in ("nexus", "node"):
        connect, fanout, rtt = runs["a"][target], runs["b"][target], runs["d"][target]
        for result in (connect, fanout, rtt):
            assert "failure" not in result, result
            assert isinstance(result["genCpuPercent"], (int, float))
            assert result["errors"]["notWebsocket"] == 0
        assert connect["connected"] == connect["requested"] == document["parameters"]["clients"]
        assert isinstance(connect["connectSeconds"], (int, float))
        assert isinstance(connect["memoryPerConnectionKiB"], (int, float))
        assert fanout["deliveries"] > 0 and fanout["deliveries"] == fanout["deliveriesExpected"]
        assert fanout["deliveriesPerSecond"] > 0
        assert fanout["latencyMs"]["p99"] is not None and fanout["serverCpuUsPerDelivery"] > 0
        assert not fanout["errors"]["ack"]
        assert rtt["roundTrips"] > 0 and rtt["latencyMs"]["p50"] is not None
    rows = {(row["scenario"], row["metric"]) for row in document["table"]}
    assert ("b", "fan-out deliveries/s") in rows and ("d", "round trips/s") in rows
