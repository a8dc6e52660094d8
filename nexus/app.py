"""The application factory, in small register_* steps."""
from __future__ import annotations

import hashlib
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

from flask import Flask
from sqlalchemy import event as sa_event
from socketio import packet as socketio_packet
from sqlalchemy.engine import Engine

from nexus import access
from nexus.api.jsonbody import BoundedJSONProvider
from nexus.config import Config
from nexus.extensions import cors, db, jwt, migrate, socketio
from nexus.logs import configure_logging, engineio_logger
from nexus.protocol import packets, polling
from nexus.realtime import broadcast, jsonenc, queue
from nexus.realtime.events import ADMIN, CHAT, DEFAULT, PRESENCE

# The namespaces this server registers, in order (the broadcast facade delivers on these).
NAMESPACES = (DEFAULT, CHAT, PRESENCE, ADMIN)
from nexus import faults
from nexus.realtime.gate import RoomGate
from nexus.realtime.relay import OutboxRelay
from nexus.realtime.sequencer import Sequencer, conversation as sequencer_conversation
from nexus.realtime.sessions import SessionRegistry

ROOT = Path(__file__).resolve().parent
log = logging.getLogger("nexus")


def create_app(config: Config | Mapping[str, Any] | None = None) -> Flask:
    """Build a Nexus app from a Config, from overrides of the environment's config, or from the environment."""
    settings = _settings(config)
    configure_logging(settings)
    app = Flask(
        "nexus",
        instance_path=settings.instance_path,
        template_folder=str(ROOT.parent / "templates"),
        static_folder=None,
    )
    app.json = BoundedJSONProvider(app)  # request bodies nested too deeply: 400, not a RecursionError
    app.config["NEXUS"] = settings
    register_flask_config(app, settings)
    register_extensions(app, settings)
    register_socketio(app, settings)
    register_blueprints(app)
    access.install(app, socketio.server_options.get("socketio_path", "socket.io"))  # inside ProxyFix
    register_rate_limits(app, settings)
    register_cli(app)
    return app


def _settings(config: Config | Mapping[str, Any] | None) -> Config:
    if isinstance(config, Config):
        return config
    return Config.from_env(**dict(config or {}))


def register_flask_config(app: Flask, settings: Config) -> None:
    """Flask and extension settings derived from the Nexus configuration."""
    Path(settings.instance_path).mkdir(parents=True, exist_ok=True)
    # One secret is configured; the Flask session key is derived from it, not the same bytes.
    session_key = hashlib.sha256(b"nexus-flask-session:" + settings.jwt_secret.encode()).hexdigest()
    app.config.update(
        SECRET_KEY=session_key,
        TESTING=settings.is_testing,
        MAX_CONTENT_LENGTH=settings.max_payload_bytes,
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=_engine_options(settings.database_url),
        JWT_SECRET_KEY=settings.jwt_secret,
        JWT_ALGORITHM="HS256",
        JWT_DECODE_ALGORITHMS=["HS256"],
        JWT_TOKEN_LOCATION=["headers"],
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=settings.access_token_ttl_s),
        JWT_REFRESH_TOKEN_EXPIRES=timedelta(seconds=settings.refresh_token_ttl_s),
        JWT_ERROR_MESSAGE_KEY="message",
    )


def _engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 15}}
    # pool_pre_ping replaces a connection that died with the server (a restart) before it is used;
    # the connect timeout bounds how long a request waits for a server that does not answer.
    return {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20, "pool_recycle": 1800,
            "pool_timeout": 10, "connect_args": {"connect_timeout": 5}}


@sa_event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers and the writer work at once; foreign keys are off by default in SQLite.
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.close()


def register_extensions(app: Flask, settings: Config) -> None:
    """Database, migrations and JWT."""
    from nexus import models  # noqa: F401 - the models must be known to migrations
    from nexus.api import register_jwt_handlers

    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"), render_as_batch=True, compare_type=True)
    jwt.init_app(app)
    register_jwt_handlers(jwt)
    # The REST API answers browsers of the same origins as the Socket.IO handshake.
    cors.init_app(
        app,
        resources={r"/api/*": {"origins": list(settings.cors_origins)}},
        supports_credentials=settings.cors_credentials,
        allow_headers=["Authorization", "Content-Type"],
        max_age=600,
    )
    broadcast.register_session_hooks(db.session)


def register_socketio(app: Flask, settings: Config) -> None:
    """The Socket.IO server, its message queue, the namespaces and the broadcast facade."""
    from nexus.realtime.namespaces.chat import ChatContext, ChatNamespace
    from nexus.realtime.control import Control, instance_roster
    from nexus.realtime.namespaces.admin import AdminNamespace
    from nexus.realtime.namespaces.default import DefaultNamespace
    from nexus.realtime.namespaces.presence import PresenceNamespace
    from nexus.realtime.shutdown import Shutdown
    from nexus.realtime.stats import StatsReporter
    from nexus.services.metrics import Metrics
    from nexus.services.presence import Presence
    from nexus.services.ratelimit import EventLimiter
    from nexus.services.rooms import LiveMembership
    from nexus.services.typing import TypingTracker
    from nexus.stores import build_stores
    from nexus.stores.live_rooms import LiveRooms

    # Always Nexus's loggers (their level is set by nexus.logs): given False, engine.io would add a
    # handler of its own, whose lines skip the formatter and the redaction.
    protocol_logger: Any = logging.getLogger("socketio")
    engine_logger: Any = engineio_logger("engineio")  # a client's mistakes: counted warnings, never errors
    origin_check = _origin_checker(settings)
    # The WebSocket handler refuses a cross-site upgrade before it answers 101 (nexus.server).
    app.extensions["nexus.origin_allowed"] = (lambda origin, environ: True) if origin_check == "*" else origin_check
    options: dict[str, Any] = dict(
        async_mode=settings.async_mode or "gevent",
        json=jsonenc,
        cors_allowed_origins=origin_check,
        cors_credentials=settings.cors_credentials,
        ping_interval=settings.ping_interval_ms / 1000,
        ping_timeout=settings.ping_timeout_ms / 1000,
        max_http_buffer_size=settings.max_payload_bytes,
        cookie=None,
        logger=protocol_logger,
        engineio_logger=engine_logger,
        # A socket's events are handled in its own reader greenlet, one after the other, as a Node
        # server does: no greenlet spawned per event, and a client's events keep their order.
        # Handlers waiting on the database or Redis yield to every other connection meanwhile.
        async_handlers=False,
        serializer=packets.JsonPacket,
    )
    manager = queue.client_manager(settings)
    manager.gate = RoomGate()
    manager.sequencer = Sequencer(_gap_reader(app))
    options["client_manager"] = manager
    socketio.init_app(app, **options)
    # python-socketio sets the json module on the server's packet class only; the base class is what
    # the message-queue managers and the test client build packets with: orjson for them too.
    socketio_packet.Packet.json = jsonenc
    packets.install(socketio.server, packets.Limits(
        max_attachments=settings.max_attachments, max_payload=settings.max_payload_bytes,
        connect_timeout_s=settings.connect_timeout_ms / 1000, connects_in_flight=settings.connects_in_flight,
    ))
    # Engine.IO (handshake, long-polling, WebSocket sessions, heartbeat) is Nexus's own front.
    polling.install(app, socketio.server, socketio.server_options.get("socketio_path", "socket.io"), settings,
                    app.extensions["nexus.origin_allowed"])

    sessions = SessionRegistry()
    app.extensions["nexus.sessions"] = sessions
    stores = build_stores(settings)
    app.extensions["nexus.stores"] = stores
    presence = Presence(stores.tally, stores.presence, settings)
    app.extensions["nexus.presence"] = presence
    metrics = Metrics()
    metrics.watch_connections(sessions, socketio.server)
    app.extensions["nexus.metrics"] = metrics
    facade = broadcast.Broadcaster(
        broadcast.ServerTransport(socketio.server),
        NAMESPACES,
        count=metrics.emitted,
    )
    if settings.message_queue_url:
        facade.outbox = OutboxRelay(
            app, manager, stale_s=settings.outbox_stale_s, instance_id=settings.instance_id,
            spawn=socketio.start_background_task, sleep=socketio.sleep,
        )
    faults.arm(settings.fault_points)
    broadcast.install(app, facade)
    control = Control(socketio.server, sessions, facade)
    app.extensions["nexus.control"] = control
    if hasattr(manager, "control_handler"):
        manager.control_handler = control.handle
    chat = ChatContext(
        live=LiveMembership(LiveRooms(stores.tally)),
        gate=manager.gate,
        typing=TypingTracker(settings.typing_timeout_s, socketio.start_background_task, socketio.sleep, app),
    )
    app.extensions["nexus.chat"] = chat
    control.attach(app=app, chat=chat, instance_id=settings.instance_id, peers=instance_roster(stores))
    app.extensions["nexus.stats"] = StatsReporter(
        instance_id=settings.instance_id, server=socketio.server, sessions=sessions, presence=presence,
        live_rooms=chat.live.store, metrics=metrics, board=stores.stats,
    )
    app.extensions["nexus.shutdown"] = Shutdown(app, socketio, settings.shutdown_grace_s)
    from nexus import outages

    limiter = EventLimiter(settings, outages=outages.install(app))
    app.extensions["nexus.limiter"] = limiter
    common = dict(config=settings, sessions=sessions, presence=presence, limiter=limiter, metrics=metrics,
                  shutdown=app.extensions["nexus.shutdown"])
    namespaces = [
        DefaultNamespace(DEFAULT, chat=chat, **common),
        ChatNamespace(CHAT, chat=chat, **common),
        PresenceNamespace(PRESENCE, **common),
        AdminNamespace(ADMIN, control=app.extensions["nexus.control"], stats=app.extensions["nexus.stats"], **common),
    ]
    for namespace in namespaces:
        socketio.on_namespace(namespace)
    app.extensions["nexus.admin"] = namespaces[-1]


def _gap_reader(app: Flask) -> Any:
    """What the sequencer reads to close a gap in live delivery: the missing messages, from the database."""
    from nexus.services import messages

    def read(sample: dict[str, Any], after: int, before: int) -> list[dict[str, Any]]:
        conversation = sequencer_conversation(sample)
        if conversation is None:
            return []
        with app.app_context():
            return messages.between(conversation, after, before)

    return read


def _origin_checker(settings: Config) -> Any:
    """Allow the configured origins and the server's own origin (the dashboard); '*' allows all."""
    if "*" in settings.cors_origins:
        return "*"
    allowed = frozenset(settings.cors_origins)

    def allowed_origin(origin: str | None, environ: dict[str, Any]) -> bool:
        if origin is None:
            return True  # not a browser: nothing cross-site to protect
        if origin in allowed:
            return True
        host = environ.get("HTTP_HOST")
        return host is not None and origin == f"{environ.get('wsgi.url_scheme', 'http')}://{host}"

    return allowed_origin


def register_blueprints(app: Flask) -> None:
    """REST API, health and the error contract."""
    from nexus.api import register_blueprints as register_api
    from nexus.api import register_error_handlers

    from nexus.api import ops

    register_error_handlers(app)
    register_api(app)
    app.register_blueprint(ops.bp)

    from nexus.dashboard import register_dashboard
    register_dashboard(app)


def register_rate_limits(app: Flask, settings: Config) -> None:
    """HTTP limits (Flask-Limiter) in the same storage as the event limits; the real client address."""
    from werkzeug.middleware.proxy_fix import ProxyFix

    from nexus.extensions import http_limiter

    if settings.trusted_proxies:
        # Outside Flask-SocketIO's middleware, so the Socket.IO handshake sees the client's address too.
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    from nexus.stores.sentinel import limits_storage

    uri, storage_options = limits_storage(settings.shared_state_url or "memory://")
    app.config.update(
        RATELIMIT_STORAGE_URI=uri,
        # Timeouts: a Redis that stops answering (rather than refusing) fails over to the in-memory
        # count within a second instead of holding the request.
        RATELIMIT_STORAGE_OPTIONS={"key_prefix": f"{settings.queue_channel}:http", "socket_timeout": 1.0,
                                   "socket_connect_timeout": 1.0, **storage_options}
        if uri.startswith("redis") else {},
        RATELIMIT_STRATEGY="moving-window",
        RATELIMIT_DEFAULT=settings.http_rate_limit,
        RATELIMIT_HEADERS_ENABLED=True,
        # A Redis outage must not turn every request into a 500: count in memory meanwhile.
        RATELIMIT_SWALLOW_ERRORS=True,
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
    )
    http_limiter.init_app(app)
    http_limiter.exempt(app.blueprints["health"])


def register_cli(app: Flask) -> None:
    """The Nexus commands, also under `flask --app nexus`."""
    from nexus.cli import register_commands

    register_commands(app.cli)
