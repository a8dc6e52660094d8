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
server_log = logging.getLogger("nexus.server")


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

    def handle_error(self, type_: Any, value: BaseException, tb: Any) -> None:
        # python-engineio lets a frame that is not an Engine.IO packet escape its WebSocket
        # loop as a ValueError; that is the client's fault: one line, no traceback.
        upgraded = self.environ and self.environ.get("HTTP_UPGRADE", "").lower() == "websocket"
        if upgraded and isinstance(value, ValueError):
            server_log.warning("closed a WebSocket that sent a malformed frame (%s)", type_.__name__)
            self.close_connection = True
            return
        super().handle_error(type_, value, tb)

    @property
    def logger(self) -> logging.Logger:
        return access_log

    def log_request(self) -> None:
        if access_log.isEnabledFor(logging.INFO) and "101" not in str(self.status):
            access_log.info("%s", redact(self.format_request()))


def prepare_instance(app: Any) -> None:
    """What an instance does before it takes connections: listen on the queue, bring live state up to date."""
    from nexus.extensions import socketio
    from nexus.realtime import keeper
    from nexus.realtime.queue import start_listening

    start_listening(socketio.server)
    keeper.start(app, socketio)


def make_server(app: Any, host: str, port: int) -> pywsgi.WSGIServer:
    """A gevent WSGI server for the app, WebSocket upgrades included (not yet listening)."""
    return pywsgi.WSGIServer(
        (host, port),
        app,
        handler_class=NexusHandler,
        log=None,  # NexusHandler logs requests itself
        error_log=server_log,
    )


class GunicornWorker(GeventWebSocketWorker):
    """gunicorn worker: gevent-websocket with Nexus's request handler (`-k nexus.server.GunicornWorker`)."""

    wsgi_handler = NexusHandler
