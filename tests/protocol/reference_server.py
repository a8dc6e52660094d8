"""`python -m tests.protocol.reference_server serve --port 3000`: Nexus's protocol layer with the
behaviour the official protocol test suites (the `test-suite/` folders of the public
socketio/engine.io-protocol and socketio/socket.io-protocol repositories) expect of the server
they test, on the port they call (3000). `REFERENCE_SUITE` picks which:

- `socket.io` (the default): Nexus's Socket.IO packet layer on `/socket.io/`, with the namespaces
  `/` and `/custom` replaced by the suite's reference ones: on connect, an `auth` event carrying
  the handshake's payload; `message` answered with `message-back` and the same arguments;
  `message-with-ack` acked with its arguments;
- `engine.io`: a bare Engine.IO server on Nexus's transports on `/engine.io/` (WebSockets are
  then served there, not on `/socket.io/`) that sends every message back.

Run with `SOCKETIO_PING_INTERVAL=300 SOCKETIO_PING_TIMEOUT=200` (the suites' timings), then
`npx mocha test-suite.js` in the suite's folder after its `npm ci`. The suites' code is not part
of this repository; this server is Nexus's side of the run.
"""
from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
from typing import Any  # noqa: E402

from flask.cli import FlaskGroup  # noqa: E402

from nexus.cli import serve_command  # noqa: E402

NAMESPACES = ("/", "/custom")


def reference_namespaces(server: Any) -> None:
    """The suites' Socket.IO behaviour on `/` and `/custom`, instead of Nexus's events."""
    for namespace in NAMESPACES:
        server.namespace_handlers.pop(namespace, None)

        def connect(sid: str, environ: dict[str, Any], auth: Any = None, namespace: str = namespace) -> None:
            # After the CONNECT packet, as the suites' Node server does from its connection handler.
            server.start_background_task(server.emit, "auth", auth if auth is not None else {}, to=sid,
                                         namespace=namespace)

        def message(sid: str, *args: Any, namespace: str = namespace) -> None:
            server.emit("message-back", args if len(args) != 1 else args[0], to=sid, namespace=namespace)

        def message_with_ack(sid: str, *args: Any) -> Any:
            return args

        server.on("connect", connect, namespace=namespace)
        server.on("message", message, namespace=namespace)
        server.on("message-with-ack", message_with_ack, namespace=namespace)


def echo_engine(app: Any) -> None:
    """A bare Engine.IO echo server on `/engine.io/`, on Nexus's transports."""
    import engineio

    from nexus.protocol.polling import EngineFront

    settings = app.config["NEXUS"]
    eio = engineio.Server(async_mode="gevent", max_http_buffer_size=settings.max_payload_bytes)
    eio.on("message", lambda sid, data: eio.send(sid, data))
    front = EngineFront(app.wsgi_app, eio, "engine.io", ping_interval_ms=settings.ping_interval_ms,
                        ping_timeout_ms=settings.ping_timeout_ms, max_payload=settings.max_payload_bytes,
                        origin_allowed=None)
    app.wsgi_app = front
    socketio_refusal = app.extensions["nexus.refuse_upgrade"]

    def refuse_upgrade(environ: dict[str, Any], start_response: Any) -> Any:
        refused = front.refuse_upgrade(environ, start_response)
        return refused if refused is not None else socketio_refusal(environ, start_response)

    app.extensions["nexus.refuse_upgrade"] = refuse_upgrade
    # The server's edge takes WebSocket upgrades on the Engine.IO path only (nexus.server.EdgeLimits).
    app.extensions["socketio"].sockio_mw.engineio_path = "/engine.io/"


def create_app() -> Any:
    from nexus.app import create_app as create_nexus
    from nexus.extensions import socketio

    app = create_nexus()
    suite = os.environ.get("REFERENCE_SUITE", "socket.io")
    if suite == "socket.io":
        reference_namespaces(socketio.server)
    elif suite == "engine.io":
        echo_engine(app)
    else:
        raise SystemExit(f"REFERENCE_SUITE is {suite!r}: use socket.io or engine.io")
    return app


cli = FlaskGroup(name="reference-server", create_app=create_app, add_default_commands=False)
cli.add_command(serve_command)

if __name__ == "__main__":
    cli.main(prog_name="reference-server")
