"""Access lines of HTTP requests, and their request id (X-Request-ID).

Every request that reaches the application gets a request id: the client's X-Request-ID when it
is a sane token (1 to 128 visible ASCII characters), else a new one (uuid4 hex). The response
carries it back in X-Request-ID, and `environ["nexus.request_id"]` holds it for the code serving
the request. Its access line (logger `nexus.requests`, event `http_request`) has the method, the
path, the status, the duration, the client's address and the request id as fields; the path keeps
the query's keys but not their values, since tokens travel in query strings.

This is WSGI middleware rather than Flask's request hooks because Engine.IO's requests never reach
Flask (nexus.protocol.polling answers them in front of it). Which requests get a line, at which level:

- the REST API, the dashboard, health and metrics: INFO, once the response is over;
- a WebSocket accepted on the Engine.IO path: INFO, status 101, when the application takes it over
  (the 101 has gone out by then, so it cannot carry X-Request-ID; the connection's own lines are
  `connected`/`disconnected`);
- Engine.IO long-polling requests: DEBUG (each client long-polls once per ping interval: a line
  each would drown the rest).

Requests refused before they reach the application (a malformed request, a refused upgrade) are
a client's mistakes, counted and logged as warnings by nexus.server.
"""
from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any, Callable, Iterable

from werkzeug.wsgi import ClosingIterator

from nexus.logs import log_event

log = logging.getLogger("nexus.requests")

HEADER = "X-Request-ID"
ENVIRON_KEY = "nexus.request_id"
#: A request id taken from the client: 1 to 128 visible ASCII characters (no spaces, no controls).
_SANE_ID = re.compile(r"[\x21-\x7e]{1,128}")
#: Longest path written in a line (query keys included).
MAX_PATH = 1000


def request_id(given: str | None) -> str:
    """The client's request id if it is a sane token, else a new one."""
    if given is not None and _SANE_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def loggable_path(environ: dict[str, Any]) -> str:
    """The request's path with the query's keys and without their values (`/x?EIO&transport&token`)."""
    raw = (environ.get("SCRIPT_NAME") or "") + (environ.get("PATH_INFO") or "")
    try:  # WSGI gives the path's bytes as latin-1
        path = raw.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:
        path = raw
    keys = [part.partition("=")[0] for part in (environ.get("QUERY_STRING") or "").split("&")]
    keys = [key for key in keys if key]
    if keys:
        path += "?" + "&".join(keys)
    return path[:MAX_PATH]


class AccessLog:
    """WSGI middleware: a request id for every request, and its access line."""

    def __init__(self, app: Callable[..., Any], socketio_path: str = "socket.io"):
        self.app = app
        self.engineio_prefix = "/" + socketio_path.strip("/") + "/"

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        # The server may have chosen it already (for a 101, which goes out before the application runs).
        rid = environ.get(ENVIRON_KEY) or request_id(environ.get("HTTP_X_REQUEST_ID"))
        environ[ENVIRON_KEY] = rid
        if environ.get("wsgi.websocket") is not None:  # upgraded already: the 101 is out
            self._line(environ, 101, started, rid, logging.INFO)
            return self.app(environ, start_response)
        engineio = (environ.get("PATH_INFO") or "").startswith(self.engineio_prefix)
        level = logging.DEBUG if engineio else logging.INFO
        status: list[int] = []

        def start(status_line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status[:] = [_status_code(status_line)]
            headers = [(name, value) for name, value in headers if name.lower() != "x-request-id"]
            headers.append((HEADER, rid))
            return start_response(status_line, headers, exc_info)

        if not log.isEnabledFor(level):
            return self.app(environ, start)
        try:
            body = self.app(environ, start)
        except BaseException:
            self._line(environ, status[0] if status else 500, started, rid, level)
            raise
        if isinstance(body, (list, tuple)):  # complete already (kept a list: the server sets its length)
            self._line(environ, status[0] if status else 0, started, rid, level)
            return body
        return ClosingIterator(body, lambda: self._line(environ, status[0] if status else 0, started, rid, level))

    @staticmethod
    def _line(environ: dict[str, Any], status: int, started: float, rid: str, level: int) -> None:
        log_event(
            log, "http_request", "{method} {path} {status} in {durationMs} ms", level=level,
            method=environ.get("REQUEST_METHOD", "?"), path=loggable_path(environ), status=status,
            durationMs=round((time.perf_counter() - started) * 1000, 1), client=environ.get("REMOTE_ADDR"),
            requestId=rid,
        )


def _status_code(status_line: str) -> int:
    try:
        return int(status_line.split(None, 1)[0])
    except (ValueError, IndexError):
        return 0


def install(app: Any, socketio_path: str = "socket.io") -> AccessLog:
    """Put the access log in front of an app's WSGI stack (inside ProxyFix, which is added later,
    so that the address logged is the client's)."""
    middleware = AccessLog(app.wsgi_app, socketio_path)
    app.wsgi_app = middleware
    return middleware
