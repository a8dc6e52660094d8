"""The dashboard's pages: each view checks its input with a schema, calls the services, renders a template."""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    send_from_directory,
    session,
    url_for,
)
from werkzeug.exceptions import HTTPException

from nexus.dashboard.forms import (
    FORM_KINDS,
    BroadcastForm,
    LoginForm,
    NotificationForm,
    RoleForm,
    RoomQuery,
    check_csrf,
    csrf_token,
)
from nexus import outages
from nexus.errors import NexusError
from nexus.extensions import db, http_limiter
from nexus.logs import log_event
from nexus.models import BROADCAST_KINDS, ROLES, User
from nexus.realtime import events
from nexus.schemas import load
from nexus.schemas.broadcasts import (
    NOTIFICATION_TYPES,
    BroadcastListSchema,
    BroadcastSchema,
    PageSchema,
)
from nexus.schemas.users import UserSearchSchema
from nexus.services import broadcasts, messages, notifications, rooms, tokens, users
from nexus.services.broadcasts import Sender
from nexus.services.rooms import Actor

log = logging.getLogger("nexus.dashboard")

STATIC = Path(__file__).resolve().parent / "static"
REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENT_BUNDLE = "socket.io.min.js"
VENDOR_FILES = frozenset({CLIENT_BUNDLE, CLIENT_BUNDLE + ".map"})
SESSION_KEY = "dashboard"
PAGE_SIZE = 25
STALE_AFTER_S = 10  # an instance that has not reported for this long is shown as not responding
# Endpoints open without a dashboard session (the sign-in page and the files every page loads).
PUBLIC = frozenset({"dashboard.login", "dashboard.asset", "dashboard.vendor"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PLAIN_HOST = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")


# -- session, CSRF and security headers ------------------------------------------------------


def _fingerprint(user: User) -> str:
    """Changes with the password: a password change ends the account's dashboard sessions."""
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, user.password_hash.encode(), hashlib.sha256).hexdigest()[:32]


def _signed_in_admin() -> User | None:
    """The administrator of this session, or None (and the session cleared) if it no longer holds."""
    data = session.get(SESSION_KEY)
    if not isinstance(data, dict):
        return None
    lifetime = current_app.config["NEXUS"].dashboard_session_s
    user = db.session.get(User, data.get("uid")) if isinstance(data.get("uid"), int) else None
    valid = (
        user is not None
        and user.is_admin
        and isinstance(data.get("since"), (int, float))
        and time.time() - data["since"] < lifetime
        and hmac.compare_digest(str(data.get("key", "")), _fingerprint(user))
    )
    if not valid:
        session.pop(SESSION_KEY, None)
        if user is not None and not user.is_admin:
            flash("Your session ended: this account is no longer an administrator.", "error")
        return None
    return user


@bp.before_request
def _guard() -> Response | None:
    # g outlives a request when an app context was pushed around it (tests, scripts): start clean.
    g.pop("admin", None)
    g.pop("csrf_token", None)
    admin = None if request.endpoint in ("dashboard.asset", "dashboard.vendor") else _signed_in_admin()
    g.admin = admin
    if request.method in UNSAFE_METHODS:
        _same_origin_or_refuse()
        check_csrf()
    if request.endpoint in PUBLIC:
        return None
    if admin is None:
        if request.endpoint == "dashboard.socket_token":
            return _json_error(NexusError("UNAUTHORIZED", "Sign in to the dashboard again."))
        target = request.full_path if request.method == "GET" else None
        return redirect(url_for("dashboard.login", next=target.rstrip("?") if target else None))
    return None


def _same_origin_or_refuse() -> None:
    # Browsers send Origin on every cross-site POST: a second line behind the CSRF token.
    origin = request.headers.get("Origin")
    if origin and origin != "null" and origin != request.host_url.rstrip("/"):
        raise NexusError("FORBIDDEN", "Cross-site requests are refused.")


@bp.after_request
def _security_headers(response: Response) -> Response:
    # The page's own host for WebSocket connections; a Host header that is not a plain host[:port] gets none.
    host = request.host if _PLAIN_HOST.fullmatch(request.host) else None
    sockets = f" ws://{host} wss://{host}" if host else ""
    response.headers["Content-Security-Policy"] = "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            f"connect-src 'self'{sockets}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if response.mimetype in ("text/html", "application/json"):
        response.headers["Cache-Control"] = "no-store"  # pages carry tokens and personal data
    return response


@bp.context_processor
def _helpers() -> dict[str, Any]:
    return {
        "csrf_token": csrf_token,
        "asset": _asset_url,
        "ago": _ago,
        "when": _when,
        "duration": _duration,
        "admin": g.get("admin"),
    }


# -- errors ----------------------------------------------------------------------------------


@bp.errorhandler(NexusError)
def _nexus_error(error: NexusError):
    return _error_page(error.status, error.code, error.message)


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException):
    status = error.code or 500
    titles = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE", 429: "RATE_LIMITED"}
    message = error.description if status < 500 else None
    if status == 429:
        message = "Too many attempts; wait a minute and try again."
    return _error_page(status, titles.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"), message)


@bp.errorhandler(Exception)
def _unexpected(error: Exception):
    refused = outages.refuse(error)  # the database or Redis is down: a 503 page, logged once per outage
    if refused is not None:
        outages.rollback(db.session)
        g.admin = None  # the page must not load anything more from the database
        page, status = _error_page(refused.status, refused.code, refused.message)
        return page, status, outages.retry_after_header(refused)
    reference = uuid.uuid4().hex[:12]
    log_event(log, "internal_error", "internal error ref={ref} {method} {path}", level=logging.ERROR, exc_info=error,
              ref=reference, method=request.method, path=request.path,
              requestId=request.environ.get("nexus.request_id"))
    db.session.rollback()
    return _error_page(500, "INTERNAL_ERROR", f"Something went wrong on the server (reference {reference}).")


def _error_page(status: int, code: str, message: str | None):
    if request.endpoint == "dashboard.socket_token":
        known = code in ("UNAUTHORIZED", "FORBIDDEN", "UNAVAILABLE")
        return _json_error(NexusError(code if known else "BAD_REQUEST", message))
    return render_template("dashboard/error.html", status=status, code=code, message=message), status


def _json_error(error: NexusError):
    return jsonify({"success": False, "error": error.to_dict()}), error.status


@bp.route("/<path:anything>")
def not_found(anything: str):
    raise NexusError("NOT_FOUND", "There is no such dashboard page.")


# -- files -----------------------------------------------------------------------------------


@bp.get("/assets/<path:filename>")
@http_limiter.exempt
def asset(filename: str):
    """The dashboard's own stylesheet, scripts and icon."""
    return send_from_directory(STATIC, filename, max_age=3600 if request.args.get("v") else None)


@bp.get("/vendor/<name>")
@http_limiter.exempt
def vendor(name: str):
    """The socket.io-client browser bundle, served from node_modules (installed by `npm ci`)."""
    if name not in VENDOR_FILES:
        raise NexusError("NOT_FOUND")
    folder = client_bundle_dir()
    if folder is None:
        return Response(
            "socket.io-client is not installed, so the dashboard cannot show live numbers.\n"
            "Run `npm ci` in the Nexus folder (it installs node_modules/socket.io-client from package.json),\n"
            "or point NEXUS_SOCKETIO_CLIENT_DIR at a socket.io-client dist/ folder, then reload.\n",
            status=503,
            mimetype="text/plain",
        )
    return send_from_directory(folder, name, max_age=3600)


def client_bundle_dir() -> Path | None:
    """The folder holding socket.io.min.js: NEXUS_SOCKETIO_CLIENT_DIR, else node_modules beside Nexus or here."""
    configured = current_app.config["NEXUS"].socketio_client_dir
    candidates = (
        [Path(configured)]
        if configured
        else [REPO_ROOT / "node_modules/socket.io-client/dist", Path.cwd() / "node_modules/socket.io-client/dist"]
    )
    return next((folder for folder in candidates if (folder / CLIENT_BUNDLE).is_file()), None)


def _asset_url(filename: str) -> str:
    try:
        version = int((STATIC / filename).stat().st_mtime)
    except OSError:
        version = 0
    return url_for("dashboard.asset", filename=filename, v=version)


# -- signing in and out ----------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
@http_limiter.limit(lambda: current_app.config["NEXUS"].login_rate_limit, methods=["POST"])
def login():
    if request.method == "GET":
        if g.admin is not None:
            return redirect(url_for("dashboard.overview"))
        return render_template("dashboard/login.html", next=_safe_next(request.args.get("next")))
    next_url = _safe_next(request.form.get("next"))
    try:
        data = load(LoginForm(), request.form.to_dict())
        user = users.verify_credentials(data["username"], data["password"])
        if not user.is_admin:
            raise NexusError("FORBIDDEN", "Only administrators can sign in to the dashboard.")
    except NexusError as error:
        message = "Enter your username and password." if error.code == "VALIDATION_ERROR" else error.message
        status = 400 if error.code == "VALIDATION_ERROR" else error.status
        page = render_template(
            "dashboard/login.html", error=message, username=request.form.get("username", ""), next=next_url
        )
        return page, status
    session.clear()  # nothing from before signing in carries over (the CSRF token is renewed too)
    g.pop("csrf_token", None)
    session.permanent = True
    session[SESSION_KEY] = {"uid": user.id, "since": time.time(), "key": _fingerprint(user)}
    log_event(log, "dashboard_sign_in", "dashboard sign-in user={username} from {client}", username=user.username,
              client=request.remote_addr)
    return redirect(next_url or url_for("dashboard.overview"))


@bp.post("/logout")
def logout():
    session.clear()
    flash("You have signed out.", "success")
    return redirect(url_for("dashboard.login"))


def _safe_next(target: str | None) -> str | None:
    """Only a path of this dashboard: never another site (an open redirect)."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/dashboard") or "\\" in target:
        return None
    return target


def _actor() -> Actor:
    admin: User = g.admin
    return Actor(user_id=admin.id, role=admin.role, username=admin.username, display_name=admin.display_name)


# -- overview --------------------------------------------------------------------------------


@bp.get("/")
def overview():
    stats = current_app.extensions["nexus.stats"].cluster()
    return render_template(
        "dashboard/overview.html",
        stats=stats,
        transports=_transports(stats["instances"]),
        health={item.get("instanceId"): _health(item) for item in stats["instances"]},
        token=tokens.issue_access_token(g.admin),
        live_available=client_bundle_dir() is not None,
        namespace=events.ADMIN,
    )


@bp.post("/socket-token")
def socket_token():
    """A fresh access token for the overview's /admin connection (a reconnect after the first one expired)."""
    return jsonify({"success": True, "token": tokens.issue_access_token(g.admin)})


def _transports(instances: list[dict[str, Any]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for item in instances:
        for name, count in (item.get("byTransport") or {}).items():
            totals[name] = totals.get(name, 0) + count
    return totals


def _health(stats: dict[str, Any]) -> str:
    reported = _parse(stats.get("timestamp"))
    if reported is None or (datetime.now(timezone.utc) - reported).total_seconds() > STALE_AFTER_S:
        return "stale"
    return "errors" if stats.get("errorsPerSecond") else "healthy"


# -- users -----------------------------------------------------------------------------------


@bp.get("/users")
def users_page():
    query = load(UserSearchSchema(), {**request.args.to_dict(), "limit": PAGE_SIZE})
    page = users.search(_actor(), query["q"], limit=query["limit"], cursor=query.get("cursor"))
    return render_template("dashboard/users.html", page=page, q=query["q"], cursor=query.get("cursor"))


@bp.get("/users/<int:user_id>")
def user_page(user_id: int):
    user = users.visible_user(_actor(), user_id)
    return render_template(
        "dashboard/user.html", user=user, roles=ROLES, types=NOTIFICATION_TYPES, is_self=user.id == g.admin.id
    )


@bp.post("/users/<int:user_id>/role")
def change_role(user_id: int):
    def act() -> str:
        role = load(RoleForm(), request.form.to_dict())["role"]
        user = users.change_role(_actor(), user_id, role, disconnect=_disconnect)
        return f"{user.username}'s role is now {user.role}."

    return _act(act, back=url_for("dashboard.user_page", user_id=user_id))


@bp.post("/users/<int:user_id>/ban")
def ban(user_id: int):
    def act() -> str:
        user = users.change_role(_actor(), user_id, "banned", disconnect=_disconnect)
        return f"{user.username} is banned and has been disconnected."

    return _act(act, back=url_for("dashboard.user_page", user_id=user_id))


@bp.post("/users/<int:user_id>/unban")
def unban(user_id: int):
    def act() -> str:
        return f"{users.unban(_actor(), user_id).username} can sign in again."

    return _act(act, back=url_for("dashboard.user_page", user_id=user_id))


@bp.post("/users/<int:user_id>/notify")
def notify(user_id: int):
    def act() -> str:
        data = load(NotificationForm(), request.form.to_dict())
        sender = Sender.of_user(g.admin)
        notifications.notify(user_id, data["title"], data["message"], type=data["type"], sender=sender)
        return "Notification sent."

    return _act(act, back=url_for("dashboard.user_page", user_id=user_id))


def _disconnect(user_id: int, reason: str) -> int:
    return current_app.extensions["nexus.control"].disconnect_user(user_id, reason)


# -- rooms -----------------------------------------------------------------------------------


@bp.get("/rooms")
def rooms_page():
    query = load(RoomQuery(), request.args.to_dict())
    page = messages.room_page(q=query["q"], after=query["after"], limit=PAGE_SIZE)
    live = current_app.extensions["nexus.chat"].live
    for room in page["rooms"]:
        room["liveMemberCount"] = len(live.members(room["name"]))
    return render_template("dashboard/rooms.html", page=page, q=query["q"], after=query["after"])


@bp.get("/rooms/<int:room_id>")
def room_page(room_id: int):
    actor = _actor()
    room = rooms.get_room(room_id)
    info = rooms.info(actor, room, current_app.extensions["nexus.chat"].live)
    query = load(PageSchema(), {"before": request.args.get("before") or None, "limit": PAGE_SIZE})
    history = messages.history(
        actor,
        room_name=room.name,
        with_user=None,
        before=query["before"],
        after=None,
        limit=query["limit"],
        order="desc",
        max_limit=current_app.config["NEXUS"].history_max_limit,
    )
    live_members = [member for member in info["members"] if member["inRoom"]]
    return render_template(
        "dashboard/room.html",
        room=info,
        live_members=live_members,
        others_live=max(0, info["liveMemberCount"] - len(live_members)),
        history=history,
        before=query["before"],
    )


@bp.post("/rooms/<int:room_id>/messages/<int:message_id>/delete")
def delete_message(room_id: int, message_id: int):
    def act() -> str:
        messages.delete(_actor(), message_id)
        return "Message deleted."

    back = _safe_next(request.form.get("back")) or url_for("dashboard.room_page", room_id=room_id)
    return _act(act, back=back)


# -- broadcasts ------------------------------------------------------------------------------


@bp.route("/broadcasts", methods=["GET", "POST"])
def broadcasts_page():
    form: dict[str, Any] = {}
    preview: dict[str, Any] | None = None
    error: str | None = None
    status = 200
    if request.method == "POST":
        form = request.form.to_dict()
        try:
            data = load(BroadcastForm(), form)
            body = load(BroadcastSchema(), _broadcast_body(data))
            if data["action"] == "send":
                broadcasts.send(Sender.of_user(g.admin), body)
                flash(f"{data['kind'].capitalize()} broadcast sent.", "success")
                return redirect(url_for("dashboard.broadcasts_page"))
            preview = _preview(data, body)
        except NexusError as exc:
            error, status = exc.message, exc.status
    query = load(BroadcastListSchema(), {**request.args.to_dict(), "limit": PAGE_SIZE})
    history = broadcasts.list_broadcasts(kind=query["kind"], before=query["before"], limit=query["limit"])
    recipients = users.usernames(
        int(row["target"]) for row in history["broadcasts"]
        if row["kind"] == "user" and (row["target"] or "").isascii() and row["target"].isdigit()
    )
    page = render_template(
        "dashboard/broadcasts.html",
        kinds=FORM_KINDS,
        all_kinds=BROADCAST_KINDS,
        types=NOTIFICATION_TYPES,
        departments=users.departments(),
        form=form,
        active=form.get("kind") if form.get("kind") in FORM_KINDS else "system",
        preview=preview,
        error=error,
        history=history,
        recipients=recipients,
        kind=query["kind"],
        before=query["before"],
    )
    return page, status


def _broadcast_body(data: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": data["kind"], "message": data["message"]}
    if data["kind"] == "department":
        body["department"] = data["department"]
    if data["kind"] == "user":
        if not data["username"]:
            raise NexusError("VALIDATION_ERROR", "username: Required for a message to one user.")
        user = users.find_by_username(data["username"])
        if user is None:
            raise NexusError("USER_NOT_FOUND", f"There is no user {data['username']!r}.")
        body.update(userId=user.id, title=data["title"] or "Notification", type=data["type"])
    return body


def _preview(data: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """What would be sent: the event, who gets it and how many accounts that is, the message as cleaned."""
    kind = data["kind"]
    text = broadcasts.clean_message(body["message"])
    if kind == "system":
        event, audience, count = events.SYSTEM_MESSAGE, "every connected user", users.count_users()
    elif kind == "admin":
        event, audience, count = events.ADMIN_MESSAGE, "the administrators", users.count_users(role="admin")
    elif kind == "department":
        department = body["department"]
        event, audience = events.DEPARTMENT_MESSAGE, f"the {department} department"
        count = users.count_users(department=department)
    else:
        user = users.get_user(body["user_id"])
        event, audience, count = events.NOTIFICATION, f"{user.display_name} (@{user.username})", 1
    personal = kind == "user"  # only a notification has a title and a type
    return {"kind": kind, "event": event, "audience": audience, "count": count, "message": text,
            "title": body.get("title") if personal else None, "type": body.get("type") if personal else None}


# -- helpers ---------------------------------------------------------------------------------


def _act(action: Callable[[], str], *, back: str):
    """Run a form's action; its outcome is flashed on the page it came from (post, redirect, get)."""
    try:
        flash(action(), "success")
    except NexusError as error:
        db.session.rollback()
        flash(error.message, "error")
    return redirect(back)


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _ago(value: Any) -> str:
    """'just now', '5 min ago', '3 h ago', '2 days ago', or a date; '—' for none."""
    moment = value if isinstance(value, datetime) else _parse(value)
    if moment is None:
        return "never"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    seconds = (datetime.now(timezone.utc) - moment).total_seconds()
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        return f"{round(seconds / 60)} min ago"
    if seconds < 86_400:
        return f"{round(seconds / 3600)} h ago"
    if seconds < 30 * 86_400:
        days = round(seconds / 86_400)
        return f"{days} day{'s' if days != 1 else ''} ago"
    return moment.strftime("%d %b %Y")


def _duration(seconds: Any) -> str:
    """'45 s', '12 min', '3 h 5 min', '2 d 4 h'."""
    total = int(seconds or 0)
    if total < 60:
        return f"{total} s"
    minutes, hours, days = total // 60, total // 3600, total // 86_400
    if total < 3600:
        return f"{minutes} min"
    if total < 86_400:
        return f"{hours} h {minutes % 60} min"
    return f"{days} d {hours % 24} h"


def _when(value: Any) -> str:
    """A moment as '2024-05-01 14:03 UTC'."""
    moment = value if isinstance(value, datetime) else _parse(value)
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
