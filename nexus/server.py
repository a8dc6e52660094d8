"""Serving Nexus: gevent's WSGI server with WebSocket support, standalone or under gunicorn."""
from __future__ import annotations

import logging
import socket
from typing import Any

from gevent import pywsgi
from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
from geventwebsocket.handler import WebSocketHandler

from nexus.logs import redact

access_log = logging.getLogger("nexus.access")


class NexusHandler(WebSocketHandler):
    """gevent-websocket's handler, logging through `nexus.access` with tokens scrubbed."""

    def handle(self) -> None:
        # Events are small writes (an event, then its ack): without TCP_NODELAY the second
        # waits for the peer's delayed ACK, adding ~40 ms to every round trip.
        try:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not a TCP socket (a Unix socket behind a proxy)
            pass
        super().handle()

    @property
    def logger(self) -> logging.Logger:
        return access_log

    def log_request(self) -> None:
        if access_log.isEnabledFor(logging.INFO) and "101" not in str(self.status):
            access_log.info("%s", redact(self.format_request()))


def make_server(app: Any, host: str, port: int) -> pywsgi.WSGIServer:
    """A gevent WSGI server for the app, WebSocket upgrades included (not yet listening)."""
    return pywsgi.WSGIServer(
        (host, port),
        app,
        handler_class=NexusHandler,
        log=None,  # NexusHandler logs requests itself
        error_log=logging.getLogger("nexus.server"),
    )


class GunicornWorker(GeventWebSocketWorker):
    """gunicorn worker: gevent-websocket with Nexus's request handler (`-k nexus.server.GunicornWorker`)."""

    wsgi_handler = NexusHandler
