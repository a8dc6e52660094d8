"""The `nexus` command: serve, create-user, token, emit, notify, broadcast, client, and Flask-Migrate's `db`."""
from __future__ import annotations

import json
import logging
import shlex
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, TextIO

import click
from flask import current_app
from flask.cli import FlaskGroup, routes_command, shell_command, with_appcontext

from nexus.config import ConfigError

#: How long emitting commands wait for the message queue to take what they sent.
FLUSH_TIMEOUT_S = 10.0


@click.command("serve")
@click.option("--host", default=None, help="Address to listen on (NEXUS_HOST; 127.0.0.1 in development).")
@click.option("--port", type=int, default=None, help="Port to listen on (PORT, default 5000).")
@with_appcontext
def serve_command(host: str | None, port: int | None) -> None:
    """Run the server (gevent, WebSocket and long-polling) on the configured database."""
    from flask_migrate import upgrade

    from nexus.server import make_server, prepare_instance
    from nexus.services.users import ensure_demo_users

    app = current_app._get_current_object()
    config = app.config["NEXUS"]
    if config.auto_migrate:
        upgrade()
    if config.create_demo_users:
        for user, password in ensure_demo_users():
            click.echo(f"Created demo {user.role}: username={user.username} password={password}  (shown once)")
    host = host or config.host
    port = config.port if port is None else port
    server = make_server(app, host, port)
    prepare_instance(app)
    server.start()
    from nexus.logs import announce

    announce(logging.getLogger("nexus"), "listening", "Nexus listening on {url} (instance {instance})",
             url=f"http://{host}:{server.server_port}", instance=config.instance_id)
    serve_until_signalled(app, server)


def serve_until_signalled(app: Any, server: Any) -> None:
    """Serve until SIGTERM (drain within NEXUS_SHUTDOWN_GRACE_S) or SIGINT (the same, faster)."""
    import signal

    import gevent

    shutdown = app.extensions["nexus.shutdown"]
    finished = gevent.event.Event()

    def stop(grace_s: float) -> None:
        from nexus.server import CONNECTIONS

        deadline = time.monotonic() + grace_s
        server.close()  # no new connections
        shutdown.drain(grace_s=grace_s)
        # Whatever clients still hold open is cut, so the process ends within its grace.
        CONNECTIONS.close_all()
        server.stop(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
        finished.set()

    def on_signal(signum: int) -> None:
        if not shutdown.closing:
            gevent.spawn(stop, shutdown.grace_s if signum == signal.SIGTERM else min(2.0, shutdown.grace_s))

    gevent.signal_handler(signal.SIGTERM, on_signal, signal.SIGTERM)
    gevent.signal_handler(signal.SIGINT, on_signal, signal.SIGINT)
    finished.wait()


@click.command("create-user")
@click.argument("username")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--role", type=click.Choice(["user", "moderator", "admin"]), default="user")
@click.option("--display-name", default=None)
@click.option("--department", default=None)
@with_appcontext
def create_user_command(username: str, password: str, role: str, display_name: str | None, department: str | None):
    """Create an account."""
    from nexus.errors import NexusError
    from nexus.services.users import create_user

    try:
        user = create_user(username, password, role=role, display_name=display_name, department=department)
    except NexusError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    click.echo(f"Created {user.role} {user.username} (id {user.id})")


@click.command("token")
@click.argument("username")
@with_appcontext
def token_command(username: str) -> None:
    """Print an access token for an account (for scripts and tests)."""
    from nexus.services.tokens import issue_access_token
    from nexus.services.users import find_by_username

    user = find_by_username(username)
    if user is None:
        raise click.ClickException(f"no user {username!r}")
    if user.is_banned:
        raise click.ClickException(f"{username} is banned")
    click.echo(issue_access_token(user))


@click.command("emit")
@click.argument("event")
@click.option("--room", required=True, help="Room to emit into, e.g. all_users or user_7.")
@click.option("--data", "data", default="{}", help="JSON payload.")
@click.option("--namespace", default="/", show_default=True)
@with_appcontext
def emit_command(event: str, room: str, data: str, namespace: str) -> None:
    """Emit an event into a room of every Nexus instance, through the message queue."""
    from nexus.realtime import queue

    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--data") from None
    manager = queue.client_manager(current_app.config["NEXUS"], write_only=True)
    if manager is None:
        raise click.ClickException("MESSAGE_QUEUE_URL is not set: there is no queue to reach other processes")
    manager.emit(event, payload, namespace=namespace, room=room)
    if not manager.close(FLUSH_TIMEOUT_S):
        raise click.ClickException(
            f"{event} was not sent: the message queue is unreachable ({manager.queue_status()['lastError']})"
        )
    click.echo(f"emitted {event} to {room} on {namespace}")


@contextmanager
def _emitter() -> Iterator[Any]:
    """An Emitter on the CLI's app (sender service:cli); errors become one clear line and exit 1."""
    from nexus.emitter import Emitter
    from nexus.errors import NexusError

    try:
        emitter = Emitter(app=current_app._get_current_object(), name="cli")
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        yield emitter
    except NexusError as exc:
        emitter.close(0)
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    if not emitter.close(FLUSH_TIMEOUT_S):
        raise click.ClickException(
            "saved, but the live event could not reach the message queue within "
            f"{FLUSH_TIMEOUT_S:.0f}s ({emitter.queue_status()['lastError']}); clients see it when they reconnect"
        )


@click.command("notify")
@click.argument("user")
@click.argument("title")
@click.argument("message")
@click.option(
    "--type", "kind", type=click.Choice(["info", "success", "warning", "error"]), default="info", show_default=True
)
@with_appcontext
def notify_command(user: str, title: str, message: str, kind: str) -> None:
    """Send USER (a username or an id) a persisted notification, live on every instance."""
    with _emitter() as emitter:
        sent = emitter.notify(user, title, message, type=kind)
    click.echo(f"notification {sent['id']} sent to {user}")


@click.command("broadcast")
@click.argument("message")
@click.option("--department", default=None, help="Only this department (department_message).")
@click.option("--admins", is_flag=True, help="Only the administrators (admin_message).")
@click.option("--room", default=None, help="Only the members of this chat room.")
@with_appcontext
def broadcast_command(message: str, department: str | None, admins: bool, room: str | None) -> None:
    """Broadcast MESSAGE: a system message to everyone, or to one department, the admins or one room."""
    options = (("--department", department is not None), ("--admins", admins), ("--room", room is not None))
    chosen = [name for name, given in options if given]
    if len(chosen) > 1:
        raise click.UsageError(f"choose one of {', '.join(chosen)}")
    with _emitter() as emitter:
        if department is not None:
            sent, target = emitter.department_message(department, message), f"department {department}"
        elif admins:
            sent, target = emitter.admin_message(message), "the admins"
        elif room is not None:
            sent, target = emitter.room_message(room, message), f"room {room}"
        else:
            sent, target = emitter.system_message(message), "everyone"
    record = f" {sent['broadcastId']}" if sent.get("broadcastId") else ""
    click.echo(f"broadcast{record} sent to {target}")


@click.command("client")
@click.argument("url", default="http://127.0.0.1:5000")
@click.option("--token", default=None, help="Access token (omit to connect as a guest).")
@click.option("--token-in-query", is_flag=True, help="Send the token as ?token= in the URL instead of auth.token.")
@click.option("--transport", type=click.Choice(["websocket", "polling", "auto"]), default="auto")
@click.option("--namespace", default="/", show_default=True)
@click.option("--run", "commands", multiple=True, help="A command to run, e.g. 'join general' (repeatable).")
@click.option("--wait", type=float, default=None, help="Seconds to keep listening after the commands, then exit.")
def client_command(
    url: str,
    token: str | None,
    token_in_query: bool,
    transport: str,
    namespace: str,
    commands: tuple[str, ...],
    wait: float | None,
) -> None:
    """Connect, run commands and print every event received, one JSON object per line.

    Commands (from --run, then standard input when it is not a terminal or no --wait is given):
    join ROOM | leave ROOM | send ROOM TEXT | dm USER_ID TEXT | status STATUS | ping |
    authenticate TOKEN | emit EVENT [JSON] | sleep SECONDS | quit
    """
    ConsoleClient(url, token=token, token_in_query=token_in_query, transport=transport, namespace=namespace).run(
        commands, sys.stdin, wait
    )


class ConsoleClient:
    """A console test client: a python-socketio client that prints what it receives."""

    def __init__(self, url: str, *, token: str | None, token_in_query: bool, transport: str, namespace: str):
        import socketio

        self.url = url
        self.token = token
        self.token_in_query = token_in_query
        self.transports = None if transport == "auto" else [transport]
        self.namespace = namespace
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("*", self._on_event, namespace=namespace)
        self.sio.on("connect", lambda: self._print("connect", {"sid": self.sio.get_sid(namespace)}), namespace=namespace)
        self.sio.on("connect_error", lambda data: self._print("connect_error", data), namespace=namespace)
        self.sio.on("disconnect", lambda *reason: self._print("disconnect", list(reason)), namespace=namespace)
        self._lock = threading.Lock()

    def _print(self, kind: str, data: Any, **extra: Any) -> None:
        with self._lock:
            click.echo(json.dumps({"type": kind, "data": data, **extra}, default=str), nl=True)
            sys.stdout.flush()

    def _on_event(self, event: str, *args: Any) -> None:
        self._print("event", args[0] if len(args) == 1 else list(args), event=event)

    def run(self, commands: Iterable[str], stdin: TextIO, wait: float | None) -> None:
        import socketio

        url = self.url
        if self.token and self.token_in_query:
            url += ("&" if "?" in url else "?") + "token=" + self.token
        auth = {"token": self.token} if self.token and not self.token_in_query else None
        try:
            self.sio.connect(url, auth=auth, transports=self.transports, namespaces=[self.namespace], wait_timeout=10)
        except socketio.exceptions.ConnectionError as exc:
            self._print("error", str(exc))
            raise SystemExit(1) from None
        self._print("transport", self.sio.transport())
        try:
            for line in commands:
                if not self.execute(line):
                    return
            if wait is None:
                for line in stdin:
                    if not self.execute(line):
                        return
            else:
                time.sleep(wait)
        finally:
            self.sio.disconnect()

    def execute(self, line: str) -> bool:
        """Run one command line; False means quit."""
        words = shlex.split(line.strip())
        if not words:
            return True
        name, args = words[0].lower(), words[1:]
        if name in ("quit", "exit"):
            return False
        if name == "sleep":
            time.sleep(float(args[0]) if args else 1.0)
            return True
        try:
            event, payload = _command_payload(name, args)
        except (IndexError, ValueError) as exc:
            self._print("usage", f"{name}: {exc or 'missing argument'}")
            return True
        arguments = payload if isinstance(payload, tuple) else (payload,)
        response = self.sio.call(event, arguments if len(arguments) != 1 else arguments[0],
                                 namespace=self.namespace, timeout=10)
        self._print("ack", response, event=event)
        return True


def _command_payload(name: str, args: list[str]) -> tuple[str, Any]:
    if name == "join":
        return "join_room", args[0]
    if name == "leave":
        return "leave_room", args[0]
    if name == "send":
        return "send_message", {"roomId": args[0], "content": " ".join(args[1:]) or _missing("TEXT"), "type": "text"}
    if name == "dm":
        return "send_message", {"to": args[0], "content": " ".join(args[1:]) or _missing("TEXT"), "type": "text"}
    if name == "status":
        return "update_status", args[0]
    if name == "ping":
        return "ping", {"timestamp": int(time.time() * 1000)}
    if name == "authenticate":
        return "authenticate", args[0]
    if name == "emit":
        return args[0], json.loads(" ".join(args[1:])) if len(args) > 1 else None
    raise ValueError("unknown command")


def _missing(what: str) -> str:
    raise ValueError(f"{what} is required")


COMMANDS = (
    serve_command,
    create_user_command,
    token_command,
    emit_command,
    notify_command,
    broadcast_command,
    client_command,
)


def register_commands(group: click.Group) -> None:
    """Add the Nexus commands to a click group (the app's `flask` CLI or `nexus`)."""
    for command in COMMANDS:
        group.add_command(command)


def _create_app() -> Any:
    from nexus.app import create_app

    return create_app()


cli = FlaskGroup(name="nexus", create_app=_create_app, add_default_commands=False, help="Nexus real-time server.")
register_commands(cli)
cli.add_command(shell_command)
cli.add_command(routes_command)


def main() -> None:
    """Entry point of the `nexus` console script (gevent is patched in nexus.__main__ first)."""
    try:
        cli.main(prog_name="nexus")
    except ConfigError as exc:
        from nexus.logs import configuration_error_line

        click.echo(configuration_error_line(exc), err=True)
        raise SystemExit(2) from None
