"""Operator endpoints against a real server with real transports."""
from __future__ import annotations

import pytest
import requests

pytestmark = pytest.mark.live
SCRAPE = "scrape-token-" + "s" * 40


def test_connections_by_namespace_and_transport(live_server, clients):
    url, seeder = live_server.database()
    seeder.user("alice")
    server = live_server.start(url, env={"NEXUS_METRICS_TOKEN": SCRAPE})
    clients("alice", server, seeder.token("alice"))
    headers = {"Authorization": f"Bearer {SCRAPE}"}
    text = requests.get(server.url + "/metrics", headers=headers, timeout=5).text
    assert 'nexus_connections{namespace="/",transport="websocket"} 1.0' in text
    status = requests.get(server.url + "/socket-status", headers=headers, timeout=5).json()
    assert status["byTransport"] == {"websocket": 1} and status["usersOnline"] == 1
    summary = requests.get(server.url + "/api/metrics", headers=headers, timeout=5).json()
    assert summary["activeConnections"] == 1 and summary["usersOnline"] == 1
