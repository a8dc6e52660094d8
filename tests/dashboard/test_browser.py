"""The dashboard in headless Chromium (Debian's package, Playwright for Python) against a real server process.

Screenshots of every page go to test-artifacts/dashboard/ for review.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import socketio

from tests.support import services
from tests.support.cluster import Client

pytestmark = pytest.mark.live

CHROMIUM = os.environ.get("NEXUS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = services.ROOT / "test-artifacts" / "dashboard"
PASSWORD = "correct-horse-1"
WAIT_MS = 12_000  # stats are pushed every 3 s: a few pushes
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}


def _browser_problem() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        return f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)"
    if not (services.ROOT / "node_modules/socket.io-client/dist/socket.io.min.js").is_file():
        return "node_modules/socket.io-client is missing: run `npm ci`"
    return None


def require_browser() -> None:
    """Skip without a browser, except in CI (CI=true), where the browser is part of the machine."""
    problem = _browser_problem()
    if problem is None:
        return
    if services.services_required():
        pytest.fail(problem + " (CI requires the browser)")
    pytest.skip(problem)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def server(live_server):
    """A real `nexus serve` with an admin and two users."""
    url, seeder = live_server.database()
    seeder.user("root", role="admin", display_name="Rita Root")
    seeder.user("alice", department="sales", display_name="Alice Liddell")
    seeder.user("bob", department="engineering", display_name="Bob Builder")
    running = live_server.start(url)
    running.seeder = seeder
    return running


class Tab:
    """A page in its own browser context, that fails the test on console errors (CSP violations among them)."""

    def __init__(self, browser: Any, base_url: str, viewport: dict[str, int] = DESKTOP):
        self.context = browser.new_context(base_url=base_url, viewport=viewport)
        self.page = self.context.new_page()
        self.base_url = base_url
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("dialog", self._dialog)
        self.accept_dialogs = False

    def _console(self, message: Any) -> None:
        where = (message.location or {}).get("url", "")
        # The user's page starts on /health, which has no icon; every dashboard page names its own.
        if message.type == "error" and not where.endswith("/favicon.ico"):
            self.errors.append(f"{message.text} [{where}]" if where else message.text)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.accept() if self.accept_dialogs else dialog.dismiss()

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def sign_in(self, username: str = "root", password: str = PASSWORD) -> None:
        self.page.goto("/dashboard/login")
        self.page.fill("input[name=username]", username)
        self.page.fill("input[name=password]", password)
        self.page.click("button[type=submit]")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tabs(browser) -> Iterator[Any]:
    made: list[Tab] = []

    def open_tab(base_url: str, viewport: dict[str, int] = DESKTOP) -> Tab:
        made.append(Tab(browser, base_url, viewport))
        return made[-1]

    yield open_tab
    for tab in made:
        tab.close()


def expect():
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


# -- tests -----------------------------------------------------------------------------------


def test_sign_in_and_watch_the_connection_count_move(server, tabs, clients):
    tab = tabs(server.url)
    page = tab.page
    page.goto("/dashboard/")
    assert page.url.startswith(server.url + "/dashboard/login")
    tab.shot("01-login")

    tab.sign_in("alice")
    expect()(page.locator(".flash-error")).to_contain_text("Only administrators can sign in")
    tab.shot("02-login-refused-non-admin")
    assert [error.split(" [")[0] for error in tab.errors] == [
        "Failed to load resource: the server responded with a status of 403 (FORBIDDEN)"
    ]
    tab.errors.clear()

    tab.sign_in("root")
    expect()(page.locator("h1")).to_have_text("Overview")
    page.click("nav >> text=Rooms")
    expect()(page.locator(".empty-title")).to_have_text("No rooms yet")
    tab.shot("04-rooms-empty")
    page.click("nav >> text=Broadcasts")
    expect()(page.locator(".empty-title")).to_have_text("No broadcasts yet")
    tab.shot("04-broadcasts-empty")
    page.click("nav >> text=Overview")

    status = page.locator("#live-status")
    expect()(status).to_have_text("Live", timeout=WAIT_MS)
    connections = page.locator("#m-connections")
    expect()(connections).to_have_text(re.compile(r"^\d+$"))
    # The stats push that follows the admin's own connection is the baseline.
    page.wait_for_timeout(3500)
    before = int(connections.inner_text())

    alice = clients("alice", server, server.seeder.token("alice"))
    expect()(connections).to_have_text(str(before + 1), timeout=WAIT_MS)
    expect()(page.locator("#m-transports")).to_contain_text("websocket")
    expect()(page.locator("#m-users")).not_to_have_text("0", timeout=WAIT_MS)
    expect()(page.locator("#instances")).to_contain_text("live-0")
    expect()(page.locator("#instances")).to_contain_text("healthy")

    # Traffic moves the message figures and the chart.
    assert alice.sio.call("join_room", "general", timeout=10)["success"]
    for number in range(24):
        alice.sio.call("send_message", {"roomId": "general", "content": f"load {number}"}, timeout=10)
        time.sleep(0.1)
    expect()(page.locator("#m-total")).to_have_text("24", timeout=WAIT_MS)
    expect()(page.locator("#m-rooms")).to_have_text("1", timeout=WAIT_MS)
    page.wait_for_timeout(3500)
    assert page.locator("#chart svg polyline").count() == 2
    assert page.locator("#chart svg .line-mps").get_attribute("points").count(",") >= 3
    tab.shot("03-overview")

    alice.sio.disconnect()
    expect()(connections).to_have_text(str(before), timeout=WAIT_MS)

    page.click("text=Sign out")
    expect()(page.locator(".flash-success")).to_have_text("You have signed out.")
    page.goto("/dashboard/users")
    assert page.url.startswith(server.url + "/dashboard/login")
    assert tab.errors == []

    phone = tabs(server.url, PHONE)
    phone.sign_in("root")
    expect()(phone.page.locator("#live-status")).to_have_text("Live", timeout=WAIT_MS)
    phone.shot("03-overview-phone")
    assert phone.page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert phone.errors == []


USER_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Nexus · user</title>
<style>
 body { font: 15px system-ui, sans-serif; margin: 2rem; color: #1c2130; background: #f5f6fa; }
 li { background: #fff; border: 1px solid #e3e6ee; border-radius: 8px; padding: .6rem .8rem; margin: .4rem 0; list-style: none; }
 ul { padding: 0; }
</style></head>
<body>
<h1>Signed in as <span id="who">…</span></h1>
<p>Socket: <b id="state">connecting</b></p>
<ul id="inbox"></ul>
<script src="/dashboard/vendor/socket.io.min.js"></script>
<script>
(async () => {
  const answer = await fetch("/api/auth/login", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({username: "alice", password: "%PASSWORD%"}),
  });
  const login = await answer.json();
  document.getElementById("who").textContent = login.user.displayName;
  const socket = io("/", {auth: {token: login.accessToken}});
  socket.on("connected", () => { document.getElementById("state").textContent = "connected"; });
  for (const event of ["system_message", "department_message", "admin_message", "notification"]) {
    socket.on(event, (payload) => {
      const item = document.createElement("li");
      item.className = event;
      item.textContent = event + ": " + (payload.title ? payload.title + " — " : "") + payload.message;
      document.getElementById("inbox").appendChild(item);
    });
  }
})();
</script>
</body></html>
""".replace("%PASSWORD%", PASSWORD)


def open_user_page(tabs, server) -> Tab:
    """A normal user's page on the server's origin: logs in over REST, listens with socket.io-client."""
    user = tabs(server.url, {"width": 760, "height": 520})
    # A document of the server's origin (loaded from it, so Chromium sees a same-origin, loopback page),
    # then rewritten into the user's page.
    user.page.goto("/health")
    user.page.set_content(USER_PAGE)
    expect()(user.page.locator("#state")).to_have_text("connected", timeout=WAIT_MS)
    expect()(user.page.locator("#who")).to_have_text("Alice Liddell")
    return user


def test_a_broadcast_sent_here_arrives_live_in_a_users_page(server, tabs):
    user = open_user_page(tabs, server)
    admin = tabs(server.url)
    page = admin.page
    admin.sign_in("root")
    page.click("text=Broadcasts")
    expect()(page.locator("h1")).to_have_text("Broadcasts")

    system = page.locator("#form-system")
    system.locator("textarea[name=message]").fill("Maintenance tonight at 22:00 UTC")
    expect()(system.locator("[data-preview-out=message]")).to_have_text("Maintenance tonight at 22:00 UTC")
    system.locator("button[value=preview]").click()
    expect()(page.locator("#preview")).to_contain_text("system_message")
    expect()(page.locator("#preview")).to_contain_text("every connected user")
    expect()(page.locator("#preview")).to_contain_text("(3 accounts)")
    admin.shot("05-broadcast-preview")
    expect()(user.page.locator("#inbox li")).to_have_count(0)

    page.locator("#form-system button[value=send]").click()
    expect()(page.locator(".flash-success")).to_have_text("System broadcast sent.")
    expect()(user.page.locator("#inbox li.system_message")).to_have_text(
        "system_message: Maintenance tonight at 22:00 UTC", timeout=WAIT_MS
    )

    page.click("a.tab[data-tab=department]")
    department = page.locator("#form-department")
    department.locator("input[name=department]").fill("sales")
    department.locator("textarea[name=message]").fill("Quarterly targets are out")
    department.locator("button[value=send]").click()
    expect()(page.locator(".flash-success")).to_have_text("Department broadcast sent.")
    expect()(user.page.locator("#inbox li.department_message")).to_have_text(
        "department_message: Quarterly targets are out", timeout=WAIT_MS
    )

    page.click("a.tab[data-tab=user]")
    one = page.locator("#form-user")
    one.locator("input[name=username]").fill("alice")
    one.locator("input[name=title]").fill("Hello Alice")
    one.locator("textarea[name=message]").fill("Your report is ready")
    one.locator("button[value=send]").click()
    expect()(user.page.locator("#inbox li.notification")).to_have_text(
        "notification: Hello Alice — Your report is ready", timeout=WAIT_MS
    )
    history = page.locator("#history")
    expect()(history).to_contain_text("Maintenance tonight at 22:00 UTC")
    expect()(history).to_contain_text("Quarterly targets are out")
    expect()(history).to_contain_text("Your report is ready")
    expect()(history).to_contain_text("@alice")
    admin.shot("06-broadcasts")
    user.shot("07-user-page")

    # Admin broadcasts reach administrators only: the user's page stays as it was.
    page.click("a.tab[data-tab=admin]")
    page.locator("#form-admin textarea[name=message]").fill("Admins: deploy at noon")
    page.locator("#form-admin button[value=send]").click()
    expect()(page.locator(".flash-success")).to_have_text("Admin broadcast sent.")
    user.page.wait_for_timeout(1000)
    expect()(user.page.locator("#inbox li.admin_message")).to_have_count(0)
    assert admin.errors == [] and user.errors == []

    phone = tabs(server.url, PHONE)
    phone.sign_in("root")
    phone.page.goto("/dashboard/broadcasts")
    phone.shot("06-broadcasts-phone")
    assert phone.page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_users_notify_and_ban_disconnects_the_users_client(server, tabs, clients):
    alice = clients("alice", server, server.seeder.token("alice"))
    admin = tabs(server.url)
    page = admin.page
    admin.sign_in("root")
    page.click("text=Users")
    expect()(page.locator("tbody tr")).to_have_count(3)
    expect()(page.locator("tbody")).to_contain_text("online")  # alice, connected now
    admin.shot("08-users")
    page.fill("input[name=q]", "lidd")
    page.click("button:has-text('Search')")
    expect()(page.locator("tbody tr")).to_have_count(1)
    page.click("text=Manage")
    expect()(page.locator("h1")).to_have_text("Alice Liddell")

    page.fill("input[name=title]", "Heads up")
    page.fill("textarea[name=message]", "Please update your app")
    page.click("button:has-text('Send notification')")
    expect()(page.locator(".flash-success")).to_have_text("Notification sent.")
    note = alice.wait_for("notification")
    assert (note["title"], note["message"], note["from"]["name"]) == ("Heads up", "Please update your app", "root")
    admin.shot("09-user")

    page.click("#ban")  # the confirmation is dismissed: nothing happens
    assert admin.dialogs and "Ban @alice?" in admin.dialogs[-1]
    assert alice.sio.connected and not alice.received("session_revoked")

    admin.accept_dialogs = True
    page.click("#ban")
    expect()(page.locator(".flash-success")).to_have_text("alice is banned and has been disconnected.")
    assert alice.wait_for("session_revoked")["reason"] == "banned"
    page.wait_for_timeout(500)
    assert not alice.sio.connected
    again = Client("alice-again")
    with pytest.raises(socketio.exceptions.ConnectionError):
        again.connect(server.url, server.seeder.token("alice"))
    admin.shot("10-user-banned")

    page.click("#unban")
    expect()(page.locator(".flash-success")).to_have_text("alice can sign in again.")
    assert clients("alice-back", server, server.seeder.token("alice")).sio.connected
    assert admin.errors == []

    phone = tabs(server.url, PHONE)
    phone.sign_in("root")
    phone.page.goto("/dashboard/users")
    phone.shot("08-users-phone")
    assert phone.page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_a_post_without_the_csrf_token_is_refused(server, tabs):
    bob_id = server.seeder.user("bob")["id"]
    admin = tabs(server.url)
    page = admin.page
    admin.sign_in("root")
    expect()(page.locator("h1")).to_have_text("Overview")

    # The signed-in browser's cookies, but no token: refused.
    forged = page.request.post(f"{server.url}/dashboard/users/{bob_id}/ban", form={"reason": "none"})
    assert forged.status == 400 and "not sent from the dashboard" in forged.text()
    wrong = page.request.post(f"{server.url}/dashboard/users/{bob_id}/ban", form={"csrf_token": "forged"})
    assert wrong.status == 400

    # The real form with its token field removed, submitted from the page: the error page.
    page.goto(f"/dashboard/users/{bob_id}")
    page.evaluate("document.querySelectorAll('input[name=csrf_token]').forEach((field) => field.remove())")
    admin.accept_dialogs = True
    page.click("#ban")
    expect()(page.locator(".error-status")).to_have_text("400")
    expect()(page.locator(".error-card")).to_contain_text("not sent from the dashboard")
    admin.shot("11-csrf-refused")

    page.goto(f"/dashboard/users/{bob_id}")
    expect()(page.locator("h1 + p")).to_contain_text("user")
    expect()(page.locator("#ban")).to_be_visible()  # still not banned


def test_a_stored_script_is_shown_as_text_and_a_message_can_be_deleted(server, tabs, clients):
    script = "<script>window.__xss = 1; alert('xss')</script>"
    image = "<img src=x onerror=\"window.__xss = 2; alert('img')\">"
    alice = clients("alice", server, server.seeder.token("alice"))
    assert alice.sio.call("join_room", "general", timeout=10)["success"]
    for content in ("hello from alice", script, image):
        assert alice.sio.call("send_message", {"roomId": "general", "content": content}, timeout=10)["success"]

    admin = tabs(server.url)
    page = admin.page
    admin.sign_in("root")
    page.click("text=Rooms")
    row = page.locator("tbody tr", has_text="#general")
    expect()(row).to_contain_text("public")
    expect()(row.locator("td[data-label='Live now']")).to_have_text("1")
    admin.shot("12-rooms")
    page.click("text=#general")
    expect()(page.locator("h1")).to_contain_text("#general")

    bodies = page.locator(".message-body")
    expect()(bodies).to_have_count(3)
    expect()(page.get_by_text(script, exact=True)).to_be_visible()
    expect()(page.get_by_text(image, exact=True)).to_be_visible()
    assert page.evaluate("window.__xss") is None
    assert page.locator(".messages script, .messages img").count() == 0
    assert admin.dialogs == []  # no alert() ran
    expect()(page.locator("aside")).to_contain_text("Alice Liddell")  # in the room now
    admin.shot("13-room")

    admin.accept_dialogs = True
    page.locator(".message", has_text="hello from alice").locator("button:has-text('Delete')").click()
    expect()(page.locator(".flash-success")).to_have_text("Message deleted.")
    expect()(page.locator(".message-deleted")).to_have_text(re.compile("This message was deleted."))
    deleted = alice.wait_for("message_deleted")
    assert deleted["deleted"] is True and deleted["content"] == ""
    assert admin.dialogs == ["Delete this message for everyone?"]
    assert admin.errors == []

    phone = tabs(server.url, PHONE)
    phone.sign_in("root")
    phone.page.goto(page.url)
    phone.shot("13-room-phone")
    assert phone.page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
