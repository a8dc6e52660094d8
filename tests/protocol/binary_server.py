"""`python -m tests.protocol.binary_server serve`: Nexus with a test-only `/binary` namespace whose
events take binary content, for tests/protocol/test_binary.py (Nexus's own events take none)."""
from gevent import monkey

monkey.patch_all()

from typing import Any  # noqa: E402

from flask.cli import FlaskGroup  # noqa: E402

from nexus.cli import serve_command  # noqa: E402
from nexus.realtime.namespaces.base import NexusNamespace, takes_binary  # noqa: E402
from nexus.realtime.sessions import SocketSession  # noqa: E402

NAMESPACE = "/binary"
SERVER_BYTES = b"\x00\x01\x02\xff"


def describe(value: Any) -> Any:
    """The Python types of a payload, as text: what a handler received."""
    if isinstance(value, list):
        return [describe(item) for item in value]
    if isinstance(value, dict):
        return {key: describe(item) for key, item in value.items()}
    return type(value).__name__


class BinaryNamespace(NexusNamespace):
    """Echoes binary arguments in its ack, and sends the client binary with an ack of its own."""

    @takes_binary
    def on_echo(self, session: SocketSession, *args: Any) -> dict[str, Any]:
        return {"types": describe(list(args)), "args": list(args)}

    @takes_binary
    def on_ask(self, session: SocketSession, *_: Any) -> dict[str, Any]:
        server = self.socketio.server

        def answered(*args: Any) -> None:
            server.emit("answered", {"types": describe(list(args)), "args": list(args)}, to=session.sid,
                        namespace=self.namespace)

        server.emit("blob", {"data": SERVER_BYTES, "label": "from the server"}, to=session.sid,
                    namespace=self.namespace, callback=answered)
        return {}


def create_app() -> Any:
    from nexus.app import create_app as create_nexus
    from nexus.extensions import socketio

    app = create_nexus()
    chat = socketio.server.namespace_handlers["/chat"]
    socketio.on_namespace(BinaryNamespace(
        NAMESPACE, config=chat.config, sessions=chat.sessions, presence=chat.presence, limiter=chat.limiter,
        metrics=chat.metrics, shutdown=chat.shutdown,
    ))
    return app


cli = FlaskGroup(name="binary-server", create_app=create_app, add_default_commands=False)
cli.add_command(serve_command)

if __name__ == "__main__":
    cli.main(prog_name="binary-server")
