"""The dashboard through Flask's test client: sign-in, CSRF, CSP, escaping, paging, actions and empty states."""
from __future__ import annotations

import contextlib
import html
import re
from typing import Any, Iterator

import pytest
from sqlalchemy import event, func, select

from nexus.extensions import db as _db
from nexus.models import Broadcast, Message, Notification, User
from nexus.services import messages, rooms, tokens
from nexus.services.rooms import Actor

PAGES = ["/dashboard/", "/dashboard/users", "/dashboard/rooms", "/dashboard/broadcasts"]
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
XSS = '<script>alert("xss")</script><img src=x onerror=alert(1)>'


def csrf(client, path: str = "/dashboard/login") -> str:
    """The CSRF token of a page's forms (the same for the whole session)."""
    match = TOKEN.search(client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def sign_in(client, user, password: str = "correct-horse-1", **extra: str):
    username = user if isinstance(user, str) else user.username
    return client.post(
        "/dashboard/login",
        data={"username": username, "password": password, "csrf_token": csrf(client), **extra},
    )


@pytest.fixture
def admin(make_user):
    return make_user("root", role="admin", display_name="Root Admin")


@pytest.fixture
def signed_in(client, admin):
    response = sign_in(client, admin)
    assert response.status_code == 302 and response.headers["Location"] == "/dashboard/"
    return client


def actor_of(user: User) -> Actor:
    return Actor(user_id=user.id, role=user.role, username=user.username, display_name=user.display_name)


def say(user: User, room: str, text: str) -> dict[str, Any]:
    rooms.join(actor_of(user), room, auto_create=True, guests_can_chat=False)
    return messages.send_to_room(actor_of(user), room, {"content": text, "type": "text"}).message


@contextlib.contextmanager
def counted_queries() -> Iterator[list[str]]:
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(_db.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(_db.engine, "before_cursor_execute", record)


# -- signing in ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES + ["/dashboard/users/1", "/dashboard/rooms/1"])
def test_pages_need_an_admin_session(client, db, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/dashboard/login?next=/dashboard")


def test_an_admin_signs_in_sees_every_page_and_signs_out(signed_in, admin):
    for path in PAGES:
        page = signed_in.get(path)
        assert page.status_code == 200, path
        assert "Root Admin" in page.get_data(as_text=True)
    out = signed_in.post("/dashboard/logout", data={"csrf_token": csrf(signed_in, "/dashboard/")})
    assert out.status_code == 302 and out.headers["Location"] == "/dashboard/login"
    assert "signed out" in signed_in.get("/dashboard/login").get_data(as_text=True)
    assert signed_in.get("/dashboard/").status_code == 302


def test_the_session_cookie_is_scoped_and_protected(client, admin):
    response = sign_in(client, admin)
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("nexus_dashboard=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/dashboard" in cookie


@pytest.mark.parametrize(
    ("role", "password", "status", "text"),
    [
        ("user", "correct-horse-1", 403, "Only administrators can sign in"),
        ("moderator", "correct-horse-1", 403, "Only administrators can sign in"),
        ("banned", "correct-horse-1", 403, "This account is banned."),
        ("admin", "wrong-password", 401, "Wrong username or password."),
    ],
)
def test_non_admins_and_wrong_passwords_are_refused(client, make_user, role, password, status, text):
    user = make_user("someone", role=role)
    response = sign_in(client, user, password=password)
    assert response.status_code == status
    assert text in response.get_data(as_text=True)
    assert client.get("/dashboard/").status_code == 302


def test_sign_in_returns_to_the_page_asked_for_but_never_to_another_site(client, admin):
    assert sign_in(client, admin, next="/dashboard/rooms?q=a").headers["Location"] == "/dashboard/rooms?q=a"
    client.post("/dashboard/logout", data={"csrf_token": csrf(client, "/dashboard/")})
    for target in ("https://evil.example/", "//evil.example/dashboard", "/api/users", "/dashboard\\..\\x"):
        assert sign_in(client, admin, next=target).headers["Location"] == "/dashboard/"
        client.post("/dashboard/logout", data={"csrf_token": csrf(client, "/dashboard/")})


def test_a_demoted_admin_loses_the_session_at_the_next_request(signed_in, make_user, admin, db):
    other = make_user("boss", role="admin")
    from nexus.services.users import set_role

    set_role(actor_of(other), admin.id, "user")
    response = signed_in.get("/dashboard/users")
    assert response.status_code == 302 and response.headers["Location"].startswith("/dashboard/login")
    assert "no longer an administrator" in signed_in.get("/dashboard/login").get_data(as_text=True)


def test_a_password_change_ends_dashboard_sessions(signed_in, admin, db):
    from werkzeug.security import generate_password_hash

    user = db.session.get(User, admin.id)
    user.password_hash = generate_password_hash("another-password-2")
    db.session.commit()
    assert signed_in.get("/dashboard/").status_code == 302


def test_sessions_expire_after_the_configured_lifetime(app_factory):
    app = app_factory(dashboard_session_s=60)
    client = app.test_client()
    with app.app_context():
        from nexus.services.users import create_user

        create_user("root", "correct-horse-1", role="admin")
    assert sign_in(client, "root").status_code == 302
    assert client.get("/dashboard/").status_code == 200
    with client.session_transaction("/dashboard/") as session:
        session["dashboard"]["since"] -= 61
    assert client.get("/dashboard/").status_code == 302


# -- CSRF, CSP and headers -------------------------------------------------------------------


def test_posts_without_the_csrf_token_are_refused(signed_in, make_user, db):
    alice = make_user("alice")
    for data in ({}, {"csrf_token": "forged"}, {"csrf_token": ""}):
        response = signed_in.post(f"/dashboard/users/{alice.id}/ban", data=data)
        assert response.status_code == 400
        assert "not sent from the dashboard" in response.get_data(as_text=True)
    assert db.session.get(User, alice.id).role == "user"
    sent = signed_in.post("/dashboard/broadcasts", data={"kind": "system", "message": "hi", "action": "send"})
    assert sent.status_code == 400
    assert db.session.scalar(select(func.count()).select_from(Broadcast)) == 0


def test_the_login_form_needs_its_csrf_token_too(client, admin):
    response = client.post("/dashboard/login", data={"username": "root", "password": "correct-horse-1"})
    assert response.status_code == 400
    assert client.get("/dashboard/").status_code == 302


def test_a_token_of_another_session_is_refused(app, signed_in, make_user, db):
    alice = make_user("alice")
    stranger = app.test_client()
    foreign = csrf(stranger)
    response = signed_in.post(f"/dashboard/users/{alice.id}/ban", data={"csrf_token": foreign})
    assert response.status_code == 400
    assert db.session.get(User, alice.id).role == "user"


def test_cross_site_posts_are_refused_even_with_a_token(signed_in, make_user, db):
    alice = make_user("alice")
    token = csrf(signed_in, "/dashboard/")
    response = signed_in.post(
        f"/dashboard/users/{alice.id}/ban", data={"csrf_token": token}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert db.session.get(User, alice.id).role == "user"


@pytest.mark.parametrize(
    "path",
    PAGES + ["/dashboard/login", "/dashboard/missing", "/dashboard/users/999", "/dashboard/assets/dashboard.css"],
)
def test_every_dashboard_response_carries_the_security_headers(signed_in, path):
    response = signed_in.get(path)
    policy = response.headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["script-src"] == "'self'"  # no inline scripts, no eval
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self' ws://localhost wss://localhost"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_pages_have_no_inline_scripts_styles_or_handlers(signed_in, make_user, db):
    alice = make_user("alice")
    say(alice, "general", "hello")
    room_id = rooms.find_room("general").id
    for path in PAGES + [f"/dashboard/users/{alice.id}", f"/dashboard/rooms/{room_id}", "/dashboard/login"]:
        body = signed_in.get(path).get_data(as_text=True)
        for script in re.findall(r"<script\b[^>]*>", body):
            assert " src=" in script, (path, script)
        assert not re.search(r"\sstyle=", body), path
        assert not re.search(r"\son[a-z]+=", body), path
        assert "<script>" not in body


def test_a_strange_host_header_gets_no_websocket_sources(client, db):
    policy = client.get("/dashboard/login", headers={"Host": "evil;script-src *"}).headers["Content-Security-Policy"]
    assert "connect-src 'self';" in policy and "script-src 'self';" in policy and "*" not in policy


def test_html_pages_are_not_cached(signed_in):
    assert signed_in.get("/dashboard/").headers["Cache-Control"] == "no-store"


# -- escaping --------------------------------------------------------------------------------


def test_user_controlled_text_is_escaped_everywhere(signed_in, make_user, db):
    evil = make_user("mallory", display_name=XSS, department="sales")
    say(evil, "general", XSS)
    room = rooms.find_room("general")
    room.topic = XSS
    db.session.commit()
    from nexus.services.broadcasts import SYSTEM, send_system_message

    send_system_message(SYSTEM, XSS)
    escaped = html.escape(XSS, quote=False)
    for path in ("/dashboard/users", f"/dashboard/users/{evil.id}", "/dashboard/rooms", f"/dashboard/rooms/{room.id}",
                 "/dashboard/broadcasts", "/dashboard/users?q=" + XSS):
        body = signed_in.get(path).get_data(as_text=True)
        assert "<script>alert" not in body and "<img src=x" not in body, path
        assert escaped.replace('"', "&#34;") in body or escaped in body, path


def test_a_search_term_is_echoed_escaped(signed_in):
    body = signed_in.get('/dashboard/users?q="><script>x</script>').get_data(as_text=True)
    assert "<script>x</script>" not in body
    assert "&#34;&gt;&lt;script&gt;x&lt;/script&gt;" in body


# -- users -----------------------------------------------------------------------------------


def test_users_are_paged_without_overlap_and_in_constant_queries(signed_in, make_user, db):
    for number in range(30):
        make_user(f"member{number:02d}")
    first = signed_in.get("/dashboard/users").get_data(as_text=True)
    names = re.findall(r"@(member\d\d)<", first)
    assert len(names) == 25 and "@root<" not in first
    cursor = re.search(r'href="/dashboard/users\?cursor=([^"]+)"', first).group(1)
    second = signed_in.get(f"/dashboard/users?cursor={cursor}").get_data(as_text=True)
    rest = re.findall(r"@(member\d\d)<", second)
    assert sorted(names + rest) == [f"member{n:02d}" for n in range(30)]
    assert "Next page" not in second and "First page" in second and "@root<" in second
    with counted_queries() as few:
        signed_in.get("/dashboard/users?q=member0")
    with counted_queries() as many:
        signed_in.get("/dashboard/users?q=member")
    assert len(many) == len(few) <= 4


def test_user_search_and_its_empty_state(signed_in, make_user):
    make_user("alice", display_name="Alice Liddell", department="sales")
    body = signed_in.get("/dashboard/users?q=liddell").get_data(as_text=True)
    assert "Alice Liddell" in body and "@alice" in body and "sales" in body
    empty = signed_in.get("/dashboard/users?q=nobody-like-this").get_data(as_text=True)
    assert "No users match" in empty and "nobody-like-this" in empty


def test_presence_and_last_seen_are_shown(signed_in, make_user, db):
    from datetime import timedelta

    from nexus.models import utcnow

    alice = make_user("alice")
    alice.status, alice.last_seen_at = "away", utcnow() - timedelta(minutes=5)
    db.session.commit()
    body = signed_in.get("/dashboard/users").get_data(as_text=True)
    assert "presence-away" in body and "5 min ago" in body
    assert "never" in body  # root has never connected


def test_an_admin_changes_a_role_and_demotions_disconnect(app, signed_in, make_user, db, monkeypatch):
    closed: list[tuple[int, str]] = []
    monkeypatch.setattr(app.extensions["nexus.control"], "disconnect_user", lambda uid, why: closed.append((uid, why)) or 0)
    mod = make_user("mod", role="moderator")
    token = csrf(signed_in, "/dashboard/")
    response = signed_in.post(f"/dashboard/users/{mod.id}/role", data={"csrf_token": token, "role": "admin"})
    assert response.status_code == 302
    assert db.session.get(User, mod.id).role == "admin"
    assert "role is now admin" in signed_in.get(response.headers["Location"]).get_data(as_text=True)
    signed_in.post(f"/dashboard/users/{mod.id}/role", data={"csrf_token": token, "role": "user"})
    # Moderator -> admin -> user: the sockets reconnect with the new role each time.
    assert closed == [(mod.id, "role changed; reconnect")] * 2
    signed_in.post(f"/dashboard/users/{mod.id}/role", data={"csrf_token": token, "role": "moderator"})
    assert len(closed) == 2  # a promotion from user needs no reconnect
    bad = signed_in.post(f"/dashboard/users/{mod.id}/role", data={"csrf_token": token, "role": "emperor"})
    assert "role: Must be one of" in signed_in.get(bad.headers["Location"]).get_data(as_text=True)


def test_ban_disconnects_live_and_unban_restores(app, signed_in, make_user, db, monkeypatch):
    closed: list[tuple[int, str]] = []
    monkeypatch.setattr(app.extensions["nexus.control"], "disconnect_user", lambda uid, why: closed.append((uid, why)) or 1)
    alice = make_user("alice")
    token = csrf(signed_in, "/dashboard/")
    done = signed_in.post(f"/dashboard/users/{alice.id}/ban", data={"csrf_token": token})
    assert db.session.get(User, alice.id).role == "banned" and closed == [(alice.id, "banned")]
    page = signed_in.get(done.headers["Location"]).get_data(as_text=True)
    assert "alice is banned" in page and "Lift the ban" in page
    signed_in.post(f"/dashboard/users/{alice.id}/unban", data={"csrf_token": token})
    assert db.session.get(User, alice.id).role == "user"
    again = signed_in.post(f"/dashboard/users/{alice.id}/unban", data={"csrf_token": token})
    assert "not banned" in signed_in.get(again.headers["Location"]).get_data(as_text=True)


def test_an_admin_cannot_change_their_own_role(signed_in, admin, db):
    token = csrf(signed_in, "/dashboard/")
    page = signed_in.get(f"/dashboard/users/{admin.id}").get_data(as_text=True)
    assert "This is your own account" in page and 'id="ban"' not in page
    response = signed_in.post(f"/dashboard/users/{admin.id}/ban", data={"csrf_token": token})
    assert "cannot change their own role" in signed_in.get(response.headers["Location"]).get_data(as_text=True)
    assert db.session.get(User, admin.id).role == "admin"


def test_a_notification_is_stored_and_pushed(signed_in, make_user, db, broadcasts):
    alice = make_user("alice")
    token = csrf(signed_in, "/dashboard/")
    form = {"csrf_token": token, "title": "Heads up", "message": "Maintenance tonight", "type": "warning"}
    response = signed_in.post(f"/dashboard/users/{alice.id}/notify", data=form)
    assert "Notification sent." in signed_in.get(response.headers["Location"]).get_data(as_text=True)
    stored = db.session.scalar(select(Notification).where(Notification.user_id == alice.id))
    assert (stored.title, stored.message, stored.type) == ("Heads up", "Maintenance tonight", "warning")
    [pushed] = broadcasts.events("notification")
    assert pushed["room"] == f"user_{alice.id}" and pushed["data"]["from"]["name"] == "root"
    empty = signed_in.post(f"/dashboard/users/{alice.id}/notify", data={"csrf_token": token, "title": "", "message": ""})
    assert "title:" in signed_in.get(empty.headers["Location"]).get_data(as_text=True)


def test_an_unknown_user_is_a_404_page(signed_in):
    response = signed_in.get("/dashboard/users/999")
    assert response.status_code == 404 and "No such user." in response.get_data(as_text=True)
    assert response.mimetype == "text/html"


# -- rooms -----------------------------------------------------------------------------------


def test_rooms_list_member_counts_paged_in_constant_queries(signed_in, make_user, db):
    users = [make_user(f"member{n}") for n in range(3)]
    for number in range(30):
        name = f"room-{number:02d}"
        for user in users[: 1 + number % 3]:
            rooms.join(actor_of(user), name, auto_create=True, guests_can_chat=False)
    first = signed_in.get("/dashboard/rooms").get_data(as_text=True)
    assert first.count('href="/dashboard/rooms/') == 25
    assert re.search(r"#room-01</a>.*?Members\" class=\"num\">2<", first, re.S)
    after = re.search(r'href="/dashboard/rooms\?after=([^"]+)"', first).group(1)
    second = signed_in.get(f"/dashboard/rooms?after={after}").get_data(as_text=True)
    assert second.count('href="/dashboard/rooms/') == 5 and "#room-29" in second and "#room-00" not in second
    with counted_queries() as few:
        signed_in.get("/dashboard/rooms?q=room-0")
    with counted_queries() as many:
        signed_in.get("/dashboard/rooms")
    assert len(many) == len(few) <= 4
    assert "No rooms match" in signed_in.get("/dashboard/rooms?q=zzz").get_data(as_text=True)


def test_rooms_empty_state(signed_in):
    assert "No rooms yet" in signed_in.get("/dashboard/rooms").get_data(as_text=True)


def test_a_rooms_messages_are_paged_newest_first(signed_in, make_user, db):
    alice = make_user("alice")
    for number in range(30):
        say(alice, "general", f"message number {number:02d}")
    room = rooms.find_room("general")
    first = signed_in.get(f"/dashboard/rooms/{room.id}").get_data(as_text=True)
    shown = re.findall(r"message number (\d\d)", first)
    assert shown == [f"{n:02d}" for n in range(29, 4, -1)]
    assert "Nobody is in this room now" in first
    older = re.search(r'href="(/dashboard/rooms/\d+\?before=\d+)"', first).group(1)
    second = signed_in.get(older).get_data(as_text=True)
    assert re.findall(r"message number (\d\d)", second) == ["04", "03", "02", "01", "00"]
    assert "Older messages" not in second and "Newest" in second
    with counted_queries() as statements:
        signed_in.get(f"/dashboard/rooms/{room.id}")
    assert len(statements) <= 8


def test_an_empty_room_says_so(signed_in, make_user, db):
    rooms.join(actor_of(make_user("alice")), "quiet", auto_create=True, guests_can_chat=False)
    body = signed_in.get(f"/dashboard/rooms/{rooms.find_room('quiet').id}").get_data(as_text=True)
    assert "No messages here yet" in body


def test_an_admin_deletes_a_message(signed_in, make_user, db, broadcasts):
    alice = make_user("alice")
    sent = say(alice, "general", "regrettable")
    room = rooms.find_room("general")
    token = csrf(signed_in, "/dashboard/")
    response = signed_in.post(f"/dashboard/rooms/{room.id}/messages/{sent['id']}/delete", data={"csrf_token": token})
    page = signed_in.get(response.headers["Location"]).get_data(as_text=True)
    assert "Message deleted." in page and "This message was deleted." in page and "regrettable" not in page
    assert db.session.get(Message, int(sent["id"])).deleted_at is not None
    assert broadcasts.events("message_deleted")[0]["room"] == "general"


def test_a_missing_room_is_a_404_page(signed_in):
    response = signed_in.get("/dashboard/rooms/12345")
    assert response.status_code == 404 and "No such room." in response.get_data(as_text=True)


# -- broadcasts ------------------------------------------------------------------------------


def test_a_preview_shows_the_audience_and_sends_nothing(signed_in, make_user, db, broadcasts):
    make_user("alice", department="sales")
    make_user("carol", department="sales")
    make_user("bob", department="engineering")
    token = csrf(signed_in, "/dashboard/broadcasts")
    form = {"csrf_token": token, "kind": "department", "department": "sales", "message": "  Targets  ", "action": "preview"}
    page = signed_in.post("/dashboard/broadcasts", data=form).get_data(as_text=True)
    assert "department_message" in page and "the sales department" in page and "(2 accounts)" in page
    assert "Nothing has been sent yet" in page
    assert db.session.scalar(select(func.count()).select_from(Broadcast)) == 0 and broadcasts.sent == []
    assert 'value="sales"' in page  # the form keeps what was typed


@pytest.mark.parametrize(
    ("form", "event", "room"),
    [
        ({"kind": "system", "message": "Hello everyone"}, "system_message", "all_users"),
        ({"kind": "admin", "message": "Admins only"}, "admin_message", "admins"),
        ({"kind": "department", "department": "sales", "message": "Sales"}, "department_message", "department_sales"),
        ({"kind": "user", "username": "alice", "title": "Hi", "message": "Just you"}, "notification", None),
    ],
)
def test_each_kind_is_sent_and_listed(signed_in, make_user, db, broadcasts, form, event, room):
    alice = make_user("alice", department="sales")
    token = csrf(signed_in, "/dashboard/broadcasts")
    response = signed_in.post("/dashboard/broadcasts", data={**form, "csrf_token": token, "action": "send"})
    assert response.status_code == 302
    [sent] = broadcasts.events(event)
    assert sent["room"] == (room or f"user_{alice.id}")
    assert sent["data"]["message"] == form["message"]
    page = signed_in.get("/dashboard/broadcasts").get_data(as_text=True)
    assert "broadcast sent" in page and form["message"] in page
    assert db.session.scalar(select(Broadcast.kind)) == form["kind"]


@pytest.mark.parametrize(
    ("form", "problem"),
    [
        ({"kind": "department", "department": "", "message": "x"}, "department"),
        ({"kind": "department", "department": "no spaces", "message": "x"}, "department"),
        ({"kind": "user", "username": "ghost", "message": "x"}, "There is no user"),
        ({"kind": "system", "message": ""}, "message"),
        ({"kind": "room", "message": "x"}, "kind"),
    ],
)
def test_broadcast_mistakes_are_shown_on_the_form(signed_in, db, broadcasts, form, problem):
    token = csrf(signed_in, "/dashboard/broadcasts")
    response = signed_in.post("/dashboard/broadcasts", data={**form, "csrf_token": token, "action": "send"})
    assert response.status_code in (400, 404)
    assert problem in response.get_data(as_text=True)
    assert broadcasts.sent == []


def test_broadcast_history_is_paged_and_filtered(signed_in, db):
    from nexus.services.broadcasts import (
        SYSTEM,
        send_admin_message,
        send_system_message,
    )

    for number in range(27):
        send_system_message(SYSTEM, f"system number {number:02d}")
    send_admin_message(SYSTEM, "for admins")
    first = signed_in.get("/dashboard/broadcasts").get_data(as_text=True)
    assert "for admins" in first and len(re.findall(r"system number \d\d", first)) == 24
    older = html.unescape(re.search(r'href="(/dashboard/broadcasts\?before=\d+)"', first).group(1))
    second = signed_in.get(older).get_data(as_text=True)
    assert re.findall(r"system number (\d\d)", second) == ["02", "01", "00"]
    admins = signed_in.get("/dashboard/broadcasts?kind=admin").get_data(as_text=True)
    assert "for admins" in admins and "system number" not in admins
    assert "No user broadcasts yet" in signed_in.get("/dashboard/broadcasts?kind=user").get_data(as_text=True)
    with counted_queries() as statements:
        signed_in.get("/dashboard/broadcasts")
    assert len(statements) <= 5


def test_broadcasts_empty_state(signed_in):
    assert "No broadcasts yet" in signed_in.get("/dashboard/broadcasts").get_data(as_text=True)


# -- overview and the live connection --------------------------------------------------------


def test_the_overview_hands_the_page_an_admin_token_in_a_data_attribute(signed_in, admin, db):
    body = signed_in.get("/dashboard/").get_data(as_text=True)
    token = re.search(r'data-token="([^"]+)"', body).group(1)
    assert tokens.resolve_token(token).user.id == admin.id
    assert 'src="/dashboard/vendor/socket.io.min.js"' in body
    assert 'data-namespace="/admin"' in body
    assert "test-instance" in body and "healthy" in body  # this instance, reporting now


def test_a_fresh_socket_token_needs_the_session_and_the_csrf_header(app, signed_in, admin, db):
    token = csrf(signed_in, "/dashboard/")
    fresh = signed_in.post("/dashboard/socket-token", headers={"X-CSRFToken": token})
    assert fresh.status_code == 200 and tokens.resolve_token(fresh.json["token"]).user.id == admin.id
    assert signed_in.post("/dashboard/socket-token").status_code == 400
    stranger = app.test_client()
    refused = stranger.post("/dashboard/socket-token", headers={"X-CSRFToken": csrf(stranger)})
    assert refused.status_code == 401 and refused.json["error"]["code"] == "UNAUTHORIZED"


def test_the_client_bundle_is_served_from_node_modules(client, db):
    from tests.support import services

    if not (services.ROOT / "node_modules/socket.io-client/dist/socket.io.min.js").is_file():
        if services.services_required():
            pytest.fail("node_modules/socket.io-client is missing: run `npm ci` (CI requires it)")
        pytest.skip("node_modules/socket.io-client is missing: run `npm ci`")
    response = client.get("/dashboard/vendor/socket.io.min.js")
    assert response.status_code == 200 and response.mimetype in ("text/javascript", "application/javascript")
    assert b"Socket.IO" in response.data[:400]
    assert client.get("/dashboard/vendor/package.json").status_code == 404


def test_without_npm_ci_the_bundle_is_a_clear_503_and_the_overview_says_so(app_factory, tmp_path):
    app = app_factory(socketio_client_dir=str(tmp_path / "nowhere"))
    client = app.test_client()
    response = client.get("/dashboard/vendor/socket.io.min.js")
    assert response.status_code == 503 and "npm ci" in response.get_data(as_text=True)
    with app.app_context():
        from nexus.services.users import create_user

        create_user("root", "correct-horse-1", role="admin")
    sign_in(client, "root")
    body = client.get("/dashboard/").get_data(as_text=True)
    assert "Live updates are off" in body and "npm ci" in body
    assert "vendor/socket.io.min.js" not in body


def test_the_dashboard_does_not_change_the_api_error_contract(client, db):
    response = client.get("/api/nothing-here")
    assert response.status_code == 404 and response.json["error"]["code"] == "NOT_FOUND"
    assert "Content-Security-Policy" not in client.get("/health").headers


# -- error states ----------------------------------------------------------------------------


def test_an_unexpected_error_is_a_page_with_a_reference_and_no_internals(signed_in, monkeypatch, caplog):
    from nexus.services import users

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals /srv/nexus/db.py")

    monkeypatch.setattr(users, "search", broken)
    response = signed_in.get("/dashboard/users")
    body = response.get_data(as_text=True)
    assert response.status_code == 500 and response.mimetype == "text/html"
    reference = re.search(r"reference ([0-9a-f]{12})", body).group(1)
    assert "secret internals" not in body and "Traceback" not in body
    assert f"ref={reference}" in caplog.text and "secret internals" in caplog.text
    assert "Content-Security-Policy" in response.headers


def test_sign_in_attempts_are_rate_limited(app_factory):
    app = app_factory(login_rate_limit="2 per minute")
    client = app.test_client()
    token = csrf(client)
    statuses = [
        client.post("/dashboard/login", data={"username": "x", "password": "y", "csrf_token": token}).status_code
        for _ in range(3)
    ]
    assert statuses == [401, 401, 429]
    refused = client.post("/dashboard/login", data={"username": "x", "password": "y", "csrf_token": token})
    assert "Too many attempts" in refused.get_data(as_text=True) and refused.mimetype == "text/html"
    assert client.get("/dashboard/login").status_code == 200  # the page itself still loads


def test_a_form_or_query_with_nul_is_a_400_page_not_a_server_error(client, signed_in):
    """NUL, which PostgreSQL refuses in text, in the sign-in form and in a search: a 400 page
    naming the field, on either database."""
    refused = client.post("/dashboard/login", data={"username": "ro\x00ot", "password": "x",
                                                     "csrf_token": csrf(client, "/dashboard/")})
    assert refused.status_code == 400
    assert "username" in refused.get_data(as_text=True)
    searched = signed_in.get("/dashboard/users?q=a%00b")
    assert searched.status_code == 400 and "q:" in searched.get_data(as_text=True)
    assert signed_in.get("/dashboard/users?q=ab").status_code == 200
