"""GET /health: liveness, with no dependency checked. GET /health/ready: readiness of the dependencies."""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Callable, Iterator

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from nexus.api.openapi import describe
from nexus.models import isoformat, utcnow
from nexus.outages import RETRY_AFTER_MS, refuse
from nexus.schemas.responses import HealthSchema, ReadinessSchema

bp = Blueprint("health", __name__)
log = logging.getLogger("nexus.health")

#: The longest one dependency check may take (seconds).
CHECK_TIMEOUT_S = 2.0


@bp.get("/health")
@describe("Liveness", auth=None, response=HealthSchema)
def health():
    """200 while the process serves requests; no dependency is checked."""
    config = current_app.config["NEXUS"]
    return jsonify({"status": "ok", "instanceId": config.instance_id, "timestamp": isoformat(utcnow())})


@bp.get("/health/ready")
@describe(
    "Readiness",
    auth=None,
    response=ReadinessSchema,
    responses={503: ("Shutting down, or a dependency failed (`failing` names it); with Retry-After.",
                     {"application/json": {"schema": ReadinessSchema}})},
)
def ready():
    """200 {"status": "ready", "checks"} when this instance is not shutting down and the database, the message
    queue and shared state answer; else 503 {"status": "unavailable", "checks", "failing"}."""
    config = current_app.config["NEXUS"]
    checks = {
        "instance": _instance(),
        "database": _run(_database),
        "messageQueue": _run(_message_queue),
        "sharedState": _run(_shared_state),
    }
    failing = sorted(name for name, check in checks.items() if check["status"] == "failing")
    body: dict[str, Any] = {
        "status": "unavailable" if failing else "ready",
        "checks": checks,
        "instanceId": config.instance_id,
        "timestamp": isoformat(utcnow()),
    }
    if failing:
        body["failing"] = failing
    if failing:
        return jsonify(body), 503, {"Retry-After": str(max(1, RETRY_AFTER_MS // 1000))}
    return jsonify(body), 200


def _run(check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    started = time.monotonic()
    try:
        with _time_limit(CHECK_TIMEOUT_S):
            result = check()
    except Exception as exc:  # any failure of a dependency is "failing"; details go to the log only
        if refuse(exc) is None:  # an outage is logged by the tracker, once, not at every probe
            log.warning("readiness check %s failed: %s", check.__name__.strip("_"), _describe(exc))
        result = {"status": "failing", "error": type(exc).__name__}
    result.setdefault("latencyMs", round((time.monotonic() - started) * 1000, 1))
    return result


def _instance() -> dict[str, Any]:
    # A draining instance (graceful shutdown) takes no new connections: the load balancer must move on.
    shutdown = current_app.extensions.get("nexus.shutdown")
    if shutdown is not None and shutdown.closing:
        return {"status": "failing", "error": "ShuttingDown"}
    return {"status": "ok"}


def _database() -> dict[str, Any]:
    from nexus.extensions import db

    with db.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"SET LOCAL statement_timeout = {int(CHECK_TIMEOUT_S * 1000)}"))
        connection.execute(text("SELECT 1")).scalar_one()
        connection.rollback()
    return {"status": "ok"}


def _message_queue() -> dict[str, Any]:
    socketio = current_app.extensions.get("socketio")
    manager = getattr(getattr(socketio, "server", None), "manager", None)
    status_of = getattr(manager, "queue_status", None)
    if status_of is None:
        return {"status": "disabled"}
    status = dict(status_of())
    ok = status.pop("ok")
    # The error's kind only: its text names hosts and ports, which stay in the log.
    last_error = status.pop("lastError", None)
    result = {"status": "ok" if ok else "failing", **status}
    if last_error:
        result["error"] = last_error.split(":", 1)[0]
    return result


def _shared_state() -> dict[str, Any]:
    stores = current_app.extensions.get("nexus.stores")
    client = getattr(stores, "client", None) or getattr(getattr(stores, "tally", None), "client", None)
    if not getattr(stores, "shared", False) or client is None:
        return {"status": "disabled"}
    client.ping()
    return {"status": "ok"}


def _describe(exc: BaseException) -> str:
    text_ = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text_}"[:300] if text_ else type(exc).__name__


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Under gevent, interrupt a check that hangs (a broker or database that stopped answering)."""
    try:
        from gevent import Timeout
        from gevent.monkey import is_module_patched
    except ImportError:  # pragma: no cover - gevent is a dependency
        yield
        return
    if not is_module_patched("socket"):
        yield
        return
    with Timeout(seconds, TimeoutError(f"no answer within {seconds:.0f}s")):
        yield
