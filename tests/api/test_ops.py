"""Operator endpoints: Prometheus metrics, the /api/metrics summary, /socket-status, and who may read them."""
from __future__ import annotations

import pytest

SCRAPE = "scrape-token-" + "s" * 40


@pytest.fixture
def ops_app(app_factory):
    return app_factory(metrics_token=SCRAPE)


def test_metrics_need_an_admin_or_the_scrape_token(ops_app):
    from nexus.services.tokens import issue_access_token
    from nexus.services.users import create_user

    client = ops_app.test_client()
    with ops_app.app_context():
        user = issue_access_token(create_user("alice", "correct-horse-1"))
        admin = issue_access_token(create_user("root", "correct-horse-1", role="admin"))
    for path in ("/metrics", "/api/metrics", "/socket-status"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer " + "x" * 60}).status_code == 401
        assert client.get(path, headers={"Authorization": f"Bearer {user}"}).status_code == 403
        assert client.get(path, headers={"Authorization": f"Bearer {admin}"}).status_code == 200
        assert client.get(path, headers={"Authorization": f"Bearer {SCRAPE}"}).status_code == 200


def test_prometheus_series_follow_real_traffic(ops_app):
    from nexus.extensions import socketio
    from nexus.services.tokens import issue_access_token
    from nexus.services.users import create_user

    with ops_app.app_context():
        token = issue_access_token(create_user("alice", "correct-horse-1"))
    client = socketio.test_client(ops_app, auth={"token": token})
    client.emit("join_room", "general", callback=True)
    client.emit("send_message", {"roomId": "general", "content": "hi"}, callback=True)
    client.emit("send_message", {"roomId": "general", "content": ""}, callback=True)  # VALIDATION_ERROR
    client.emit("no_such_event", callback=True)
    text = ops_app.test_client().get("/metrics", headers={"Authorization": f"Bearer {SCRAPE}"}).get_data(as_text=True)
    assert 'nexus_events_received_total{event="send_message"} 2.0' in text
    assert 'nexus_events_received_total{event="unknown"} 1.0' in text
    assert "nexus_messages_stored_total 1.0" in text
    assert 'nexus_errors_total{code="VALIDATION_ERROR"} 1.0' in text
    assert 'nexus_errors_total{code="UNKNOWN_EVENT"} 1.0' in text
    assert 'nexus_events_emitted_total{event="room_message"} 1.0' in text
    assert 'nexus_event_handling_seconds_count{event="join_room"} 1.0' in text
    # nexus_connections{namespace, transport} needs a real engine.io transport: tests/live/test_ops_live.py


def test_shapes_of_api_metrics_and_socket_status(ops_app):
    from nexus.extensions import socketio

    socketio.test_client(ops_app)
    headers = {"Authorization": f"Bearer {SCRAPE}"}
    summary = ops_app.test_client().get("/api/metrics", headers=headers).get_json()
    for key in ("totalConnections", "activeConnections", "messagesPerSecond", "errorsPerSecond", "uptime",
                "memory", "timestamp"):
        assert key in summary, key
    assert summary["activeConnections"] == 1 and summary["totalConnections"] == 1
    assert summary["memory"]["rss"] > 0 and [i["instanceId"] for i in summary["instances"]] == ["test-instance"]
    status = ops_app.test_client().get("/socket-status", headers=headers).get_json()
    assert status["instanceId"] == "test-instance" and status["connections"] == 1
    assert status["byNamespace"] == {"/": 1} and status["uptime"] >= 0
