"""`python -m tests.protocol.idle_server serve`: Nexus with a test-only `/_test/counts` route that
reports what the process holds (live greenlets and WebSocket readers among them, the event loop's
active watchers, open file descriptors, connections, Engine.IO sessions), for
tests/protocol/test_idle_reader.py."""
from gevent import monkey

monkey.patch_all()

import gc  # noqa: E402
import os  # noqa: E402
from typing import Any  # noqa: E402

from flask.cli import FlaskGroup  # noqa: E402

from nexus.cli import serve_command  # noqa: E402


def counts() -> dict[str, int]:
    """What the process holds now (the request asking for it holds one greenlet and one connection)."""
    import gevent
    import greenlet

    from nexus.extensions import socketio
    from nexus.server import CONNECTIONS, LimitedWebSocket

    gc.collect()
    running = [item for item in gc.get_objects() if isinstance(item, greenlet.greenlet) and bool(item)]
    readers = sum(1 for item in running
                  if getattr(getattr(item, "_run", None), "__func__", None) is LimitedWebSocket._read_ready)
    connections = list(CONNECTIONS._handlers)
    return {
        "greenlets": len(running),
        "readers": readers,
        "watchers": gevent.get_hub().loop.activecnt,
        "fds": len(os.listdir("/proc/self/fd")),
        "connections": len(connections),
        "watched": sum(1 for item in connections if isinstance(item, LimitedWebSocket)),
        "sessions": len(socketio.server.eio.sockets),
    }


def create_app() -> Any:
    from flask import jsonify

    from nexus.app import create_app as create_nexus

    app = create_nexus()
    app.add_url_rule("/_test/counts", "test_counts", lambda: jsonify(counts()))
    return app


cli = FlaskGroup(name="idle-server", create_app=create_app, add_default_commands=False)
cli.add_command(serve_command)

if __name__ == "__main__":
    cli.main(prog_name="idle-server")
