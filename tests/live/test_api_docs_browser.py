"""/api/docs in a real browser: Swagger UI from node_modules runs under the strict Content-Security-Policy
(nothing refused), shows every operation of the document, and its "Try it out" reaches the server."""
from __future__ import annotations

import pytest
import requests

from tests.dashboard.test_browser import browser  # noqa: F401 - the Chromium fixture (skips without one)
from tests.support import services

pytestmark = pytest.mark.live


def test_swagger_ui_runs_under_the_csp_and_calls_the_api(live_server, browser):  # noqa: F811
    services.require("swagger-ui")
    url, _seeder = live_server.database()
    server = live_server.start(url)
    document = requests.get(server.url + "/api/openapi.json", timeout=10).json()
    operations = sum(len(methods) for methods in document["paths"].values())

    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    failed: list[str] = []  # the page's own requests (the browser's favicon request is not among them)
    page.on("response", lambda answer: failed.append(f"{answer.status} {answer.url}") if answer.status >= 400 else None)
    try:
        page.goto(server.url + "/api/docs")
        page.wait_for_selector(".opblock", timeout=15_000)
        assert page.locator(".opblock").count() == operations
        assert "Nexus REST API" in page.locator(".info .title").first.inner_text()

        health = page.locator(".opblock", has=page.locator(".opblock-summary-path[data-path='/health']"))
        health.locator(".opblock-summary").first.click()
        page.get_by_role("button", name="Try it out").click()
        page.get_by_role("button", name="Execute").click()
        status = page.locator(".live-responses-table tbody .response-col_status").first
        status.wait_for(timeout=10_000)
        assert status.inner_text().strip() == "200"
    finally:
        page.close()
    assert failed == [], failed
    # The one resource error left is the browser's favicon request (there is none); a CSP refusal fails.
    favicon = "Failed to load resource: the server responded with a status of 404"
    refused = [text for text in problems if not text.startswith(favicon)]
    assert refused == [], refused
