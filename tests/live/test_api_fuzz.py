"""The REST API driven from its own OpenAPI document against a real server: schemathesis generates
requests for every operation (valid and invalid ones) and checks that none is answered with a 5xx
and that every answer (status, content type, headers, body) is one the document describes."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

pytestmark = pytest.mark.live

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)
#: Test cases per operation and phase, and the run's time budget in seconds.
MAX_EXAMPLES = 25
MAX_TIME_S = 60


@pytest.mark.timeout(MAX_TIME_S * 3 + 60)
def test_every_operation_answers_as_documented(live_server, tmp_path):
    url, seeder = live_server.database()
    seeder.user("root", role="admin")
    seeder.user("alice")
    # Limits high enough that the run's requests are answered by the routes, not the HTTP limiter.
    server = live_server.start(
        url, env={"NEXUS_HTTP_RATE_LIMIT": "100000 per minute", "NEXUS_LOGIN_RATE_LIMIT": "100000 per minute"}
    )
    token = seeder.token("root")
    bearer = {"Authorization": f"Bearer {token}"}
    # The room the document names as its example of a room reference.
    created = requests.post(server.url + "/api/rooms", json={"name": "general"}, headers=bearer, timeout=10)
    assert created.status_code == 201, created.text

    command = [
        sys.executable, "-m", "schemathesis.cli", "run", server.url + "/api/openapi.json",
        # An administrator's access token: every operation is reachable (the others' refusals are documented).
        "--header", f"Authorization: Bearer {token}",
        # Logging out would revoke that token for the rest of the run; the REST tests check its answers.
        "--exclude-path", "/api/auth/logout",
        "--checks", CHECKS,
        "--max-examples", str(MAX_EXAMPLES),
        "--max-time", str(MAX_TIME_S),
        "--request-timeout", "10",
        # No generated X-API-Key beside the token: the run acts as the administrator throughout.
        "--generation-with-security-parameters", "false",
        "--generation-database", "none",
        "--workers", "1",
        "--no-color",
        "--report", "junit",
        "--report-junit-path", str(tmp_path / "schemathesis.xml"),
    ]
    env = {**os.environ, "SCHEMATHESIS_TELEMETRY": "false"}
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=MAX_TIME_S * 3)
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"schemathesis found answers outside the document:\n{output[-20000:]}"
    assert "Test cases:" in output and " passed" in output, output[-5000:]
    server_log = server.log()
    assert "internal error ref=" not in server_log, server_log[-5000:]
