"""The admin dashboard: server-rendered pages under /dashboard, live numbers from the /admin namespace."""
from __future__ import annotations

from datetime import timedelta

from flask import Flask


def register_dashboard(app: Flask) -> None:
    """Mount the dashboard and set up its session cookie (signed, HttpOnly, SameSite=Lax) and CSRF tokens."""
    from nexus.dashboard import views

    settings = app.config["NEXUS"]
    app.config.update(
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=settings.dashboard_session_s),
        SESSION_COOKIE_NAME="nexus_dashboard",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.dashboard_secure_cookie,
        SESSION_COOKIE_PATH="/dashboard",
        # A token is good for the whole session; the session's own lifetime bounds it.
        WTF_CSRF_TIME_LIMIT=None,
        WTF_CSRF_FIELD_NAME="csrf_token",
    )
    app.register_blueprint(views.bp)
