"""Configuration: the only module that reads the environment."""
from __future__ import annotations

import importlib
import os
import re
import secrets
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import parse_qs, quote, unquote, urlsplit

ENVIRONMENTS = ("development", "production", "testing")
MIN_SECRET_BYTES = 32
# A service key with fewer distinct characters than this is a placeholder ("xxxx...", "changeme...").
MIN_KEY_DISTINCT_CHARACTERS = 10


class ConfigError(ValueError):
    """A configuration value is missing or invalid; names the variable."""

    def __init__(self, variable: str, problem: str):
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


@dataclass(frozen=True)
class Config:
    """Validated settings of one Nexus process."""

    env: str = "development"
    host: str = "127.0.0.1"
    port: int = 5000
    instance_path: str = ""
    instance_id: str = ""
    database_url: str = ""
    message_queue_url: str | None = None
    celery_broker_url: str | None = None  # the Celery worker's broker; MESSAGE_QUEUE_URL when unset
    redis_url: str | None = None
    queue_channel: str = "nexus"
    jwt_secret: str = ""
    # Keys that other services send in X-API-Key to push notifications and broadcasts over REST.
    service_api_keys: tuple[str, ...] = field(default=(), repr=False)
    access_token_ttl_s: int = 15 * 60
    refresh_token_ttl_s: int = 30 * 24 * 3600
    cors_origins: tuple[str, ...] = ()
    cors_credentials: bool = True
    allow_guests: bool = True
    guests_can_chat: bool = False
    auto_create_rooms: bool = True
    max_message_length: int = 4000
    typing_timeout_s: float = 5.0
    catchup_limit: int = 500
    away_after_s: int = 300
    status_restore_s: int = 300
    last_seen_write_s: int = 60
    history_max_limit: int = 100
    rate_limit_window_ms: int = 60_000
    rate_limit_max_requests: int = 100
    http_rate_limit: str = "300 per minute"
    login_rate_limit: str = "10 per minute"
    trusted_proxies: int = 0
    metrics_token: str | None = field(default=None, repr=False)
    max_sockets_per_user: int = 20
    cleanup_interval_s: int = 300
    shutdown_grace_s: int = 10
    max_rooms_per_socket: int = 100
    ping_timeout_ms: int = 60_000
    ping_interval_ms: int = 25_000
    max_payload_bytes: int = 1_000_000
    max_attachments: int = 10
    connect_timeout_ms: int = 45_000
    # Namespace CONNECTs handled at once (token, presence, welcome); the rest wait their turn, so a
    # reconnect storm cannot starve the events of the connections already open.
    connects_in_flight: int = 32
    websocket_compression: bool = False
    max_backlog_bytes: int = 8 * 1024 * 1024
    # The HTTP/WebSocket edge (nexus.server): timeouts before a request is read, connections per
    # client address (loopback peers are not counted), and each WebSocket's frame budget.
    header_timeout_s: int = 30
    keepalive_timeout_s: int = 75
    max_connections_per_address: int = 1000
    websocket_frame_rate: int = 2000
    websocket_frame_burst: int = 10_000
    # An outbox entry still unpublished this long after its commit is published by any instance.
    outbox_stale_s: float = 3.0
    # Sent messages arriving within this many milliseconds of one another while the server is busy are
    # written in one transaction (a lone message is written at once); 0: one transaction per message.
    group_commit_ms: int = 2
    # Test-only places where the process kills itself on purpose ({point: key prefix}); never in production.
    fault_points: dict[str, str] = field(default_factory=dict)
    auto_migrate: bool = True
    create_demo_users: bool = True
    log_level: str = "INFO"
    log_json: bool = False
    protocol_debug: bool = False
    async_mode: str | None = None
    dashboard_session_s: int = 8 * 3600
    dashboard_secure_cookie: bool = False
    # Where the socket.io-client browser bundle is (its dist/ folder); found in node_modules when unset.
    socketio_client_dir: str | None = None

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def is_testing(self) -> bool:
        return self.env == "testing"

    @property
    def shared_state_url(self) -> str | None:
        """The Redis that instances share live state through: REDIS_URL (or REDIS_SENTINELS), or a
        Redis queue (redis:// or behind Sentinel)."""
        if self.redis_url:
            return self.redis_url
        if self.message_queue_url and self.message_queue_url.startswith(("redis://", "rediss://", SENTINEL_PREFIX)):
            return self.message_queue_url
        return None

    def with_overrides(self, **overrides: Any) -> "Config":
        """A copy with some fields replaced (tests, CLI options)."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(", ".join(sorted(unknown)), "unknown setting")
        return replace(self, **overrides)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Config":
        """Read and validate the environment; raises ConfigError naming the variable."""
        env = _Reader(os.environ if environ is None else environ)
        mode = env.choice("NEXUS_ENV", ENVIRONMENTS, default=env.raw("NODE_ENV") or "development")
        production = mode == "production"

        instance_path = env.text("NEXUS_INSTANCE_PATH", default=str(Path.cwd() / "instance"))
        database_url = normalize_database_url(env.text("DATABASE_URL", default=""), instance_path)

        redis_url = _redis_url(env)
        queue_url = _queue_url(env, "MESSAGE_QUEUE_URL")
        celery_broker_url = _queue_url(env, "CELERY_BROKER_URL")
        _require_drivers(env, database_url, redis_url, queue_url, celery_broker_url)
        if queue_url is None and redis_url and env.flag("SOCKETIO_REDIS_ENABLED", default=False):
            queue_url = redis_url

        jwt_secret = env.text("JWT_SECRET", default="")
        if jwt_secret and len(jwt_secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError("JWT_SECRET", f"must be at least {MIN_SECRET_BYTES} bytes long")
        if not jwt_secret:
            if production:
                raise ConfigError("JWT_SECRET", "is required when NEXUS_ENV=production")
            jwt_secret = _development_secret(instance_path)

        origins = _origins(env, production)

        # Milliseconds, announced to clients exactly as given (short values serve protocol test suites).
        ping_interval = env.integer("SOCKETIO_PING_INTERVAL", default=25_000, minimum=100, maximum=3_600_000)
        ping_timeout = env.integer("SOCKETIO_PING_TIMEOUT", default=60_000, minimum=100, maximum=3_600_000)

        values: dict[str, Any] = dict(
            env=mode,
            host=env.text("NEXUS_HOST", default="0.0.0.0" if production else "127.0.0.1"),
            port=env.integer("PORT", default=5000, minimum=0, maximum=65535),
            instance_path=instance_path,
            instance_id=env.text("NEXUS_INSTANCE_ID", default="") or f"{os.uname().nodename}-{os.getpid()}",
            database_url=database_url,
            message_queue_url=queue_url,
            celery_broker_url=celery_broker_url,
            redis_url=redis_url,
            queue_channel=env.text("SOCKETIO_REDIS_PREFIX", default="nexus"),
            jwt_secret=jwt_secret,
            service_api_keys=_service_api_keys(env, production),
            access_token_ttl_s=env.integer("JWT_ACCESS_TOKEN_EXPIRES_S", default=900, minimum=10, maximum=7 * 86400),
            refresh_token_ttl_s=env.integer(
                "JWT_REFRESH_TOKEN_EXPIRES_S", default=30 * 86400, minimum=60, maximum=365 * 86400
            ),
            cors_origins=origins,
            cors_credentials=env.flag("SOCKETIO_CORS_CREDENTIALS", default=True),
            allow_guests=env.flag("SOCKETIO_ALLOW_GUESTS", default=True),
            guests_can_chat=env.flag("SOCKETIO_GUESTS_CAN_CHAT", default=False),
            auto_create_rooms=env.flag("NEXUS_AUTO_CREATE_ROOMS", default=True),
            max_message_length=env.integer("NEXUS_MAX_MESSAGE_LENGTH", default=4000, minimum=1, maximum=100_000),
            typing_timeout_s=env.integer("NEXUS_TYPING_TIMEOUT_S", default=5, minimum=1, maximum=120),
            catchup_limit=env.integer("NEXUS_CATCHUP_LIMIT", default=500, minimum=1, maximum=10_000),
            away_after_s=env.integer("NEXUS_AWAY_AFTER_S", default=300, minimum=1, maximum=86_400),
            status_restore_s=env.integer("NEXUS_STATUS_RESTORE_S", default=300, minimum=0, maximum=30 * 86_400),
            last_seen_write_s=env.integer("NEXUS_LAST_SEEN_WRITE_S", default=60, minimum=1, maximum=3600),
            history_max_limit=env.integer("NEXUS_HISTORY_MAX_LIMIT", default=100, minimum=1, maximum=1000),
            rate_limit_window_ms=env.integer(
                "SOCKETIO_RATE_LIMIT_WINDOW_MS", default=60_000, minimum=1000, maximum=86_400_000
            ),
            rate_limit_max_requests=env.integer(
                "SOCKETIO_RATE_LIMIT_MAX_REQUESTS", default=100, minimum=1, maximum=1_000_000
            ),
            http_rate_limit=_rate_limit(env, "NEXUS_HTTP_RATE_LIMIT", "300 per minute"),
            login_rate_limit=_rate_limit(env, "NEXUS_LOGIN_RATE_LIMIT", "10 per minute"),
            trusted_proxies=env.integer("NEXUS_TRUSTED_PROXIES", default=0, minimum=0, maximum=5),
            metrics_token=_metrics_token(env),
            shutdown_grace_s=env.integer("NEXUS_SHUTDOWN_GRACE_S", default=10, minimum=1, maximum=300),
            cleanup_interval_s=env.integer("NEXUS_CLEANUP_INTERVAL_S", default=300, minimum=10, maximum=86_400),
            max_sockets_per_user=env.integer("NEXUS_MAX_SOCKETS_PER_USER", default=20, minimum=1, maximum=1000),
            max_rooms_per_socket=env.integer("NEXUS_MAX_ROOMS_PER_SOCKET", default=100, minimum=1, maximum=10_000),
            ping_timeout_ms=ping_timeout,
            ping_interval_ms=ping_interval,
            max_payload_bytes=env.integer("SOCKETIO_MAX_PAYLOAD", default=1_000_000, minimum=1024, maximum=100_000_000),
            max_attachments=env.integer("NEXUS_MAX_ATTACHMENTS", default=10, minimum=0, maximum=1000),
            connect_timeout_ms=env.integer("NEXUS_CONNECT_TIMEOUT_MS", default=45_000, minimum=100, maximum=600_000),
            connects_in_flight=env.integer("NEXUS_CONNECTS_IN_FLIGHT", default=32, minimum=1, maximum=10_000),
            websocket_compression=env.flag("SOCKETIO_WEBSOCKET_COMPRESSION", default=False),
            max_backlog_bytes=env.integer(
                "NEXUS_MAX_BACKLOG_BYTES", default=8 * 1024 * 1024, minimum=65_536, maximum=1_000_000_000
            ),
            header_timeout_s=env.integer("NEXUS_HEADER_TIMEOUT_S", default=30, minimum=1, maximum=3600),
            keepalive_timeout_s=env.integer("NEXUS_KEEPALIVE_TIMEOUT_S", default=75, minimum=1, maximum=3600),
            max_connections_per_address=env.integer(
                "NEXUS_MAX_CONNECTIONS_PER_ADDRESS", default=1000, minimum=1, maximum=1_000_000
            ),
            websocket_frame_rate=env.integer("NEXUS_WS_FRAME_RATE", default=2000, minimum=1, maximum=1_000_000),
            websocket_frame_burst=env.integer("NEXUS_WS_FRAME_BURST", default=10_000, minimum=1, maximum=100_000_000),
            outbox_stale_s=env.integer("NEXUS_OUTBOX_STALE_MS", default=3000, minimum=200, maximum=600_000) / 1000,
            group_commit_ms=env.integer("NEXUS_GROUP_COMMIT_MS", default=2, minimum=0, maximum=1000),
            fault_points=_fault_points(env, production),
            auto_migrate=env.flag("NEXUS_AUTO_MIGRATE", default=not production),
            create_demo_users=env.flag("NEXUS_DEMO_USERS", default=not production),
            log_level=env.choice(
                "LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), default="INFO", upper=True
            ),
            log_json=env.flag("NEXUS_LOG_JSON", default=production),
            protocol_debug=_protocol_debug(env.raw("DEBUG")),
            dashboard_session_s=env.integer(
                "NEXUS_DASHBOARD_SESSION_S", default=8 * 3600, minimum=60, maximum=30 * 86_400
            ),
            dashboard_secure_cookie=env.flag("NEXUS_DASHBOARD_SECURE_COOKIE", default=production),
            socketio_client_dir=env.raw("NEXUS_SOCKETIO_CLIENT_DIR"),
        )
        values.update(overrides)
        return cls(**values)


class _Reader:
    """Typed access to environment variables; every failure names the variable."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        value = self.raw(name)
        return default if value is None else value

    def integer(self, name: str, default: int, minimum: int, maximum: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(name, f"must be a whole number, got {value!r}") from None
        if not minimum <= number <= maximum:
            raise ConfigError(name, f"must be between {minimum} and {maximum}, got {number}")
        return number

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, f"must be true or false, got {value!r}")

    def choice(self, name: str, allowed: tuple[str, ...], default: str, upper: bool = False) -> str:
        value = self.raw(name)
        if value is None:
            value = default
        value = value.upper() if upper else value.lower()
        if value not in allowed:
            raise ConfigError(name, f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def url(self, name: str, schemes: tuple[str, ...]) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        _check_url(name, value, schemes)
        return value


def _check_url(name: str, value: str, schemes: tuple[str, ...]) -> None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(name, f"is not a valid URL ({exc})") from None
    if parts.scheme not in schemes:
        raise ConfigError(name, f"must start with one of {', '.join(s + '://' for s in schemes)}")
    if not parts.hostname:
        raise ConfigError(name, "has no host name")


def normalize_database_url(value: str, instance_path: str) -> str:
    """A SQLAlchemy URL for DATABASE_URL (empty: a SQLite file in the instance folder)."""
    if not value:
        return "sqlite:///" + str(Path(instance_path) / "nexus.db")
    # Heroku hands out postgres:// URLs, which SQLAlchemy 2 no longer accepts.
    if value.startswith("postgres://"):
        value = "postgresql+psycopg://" + value[len("postgres://"):]
    elif value.startswith("postgresql://"):
        value = "postgresql+psycopg://" + value[len("postgresql://"):]
    scheme = value.split("://", 1)[0] if "://" in value else ""
    if not scheme.startswith(("sqlite", "postgresql")):
        raise ConfigError("DATABASE_URL", "must be a sqlite:/// or postgresql:// URL")
    return value


def _require_drivers(
    env: _Reader, database_url: str, redis_url: str | None, queue_url: str | None, celery_broker_url: str | None
) -> None:
    """Refuse at start, naming the variable and the extra to install, a URL whose client package is
    missing (the base install has neither the PostgreSQL driver nor the Redis client)."""
    dialect, _, driver = database_url.split("://", 1)[0].partition("+")
    if dialect == "postgresql":
        _require_package("DATABASE_URL", "PostgreSQL", driver or "psycopg2")
    redis_variable = next(
        (name for name in ("REDIS_SENTINELS", "REDIS_URL", "REDIS_HOST") if env.raw(name)), "REDIS_URL"
    )
    for variable, url in (
        (redis_variable, redis_url), ("MESSAGE_QUEUE_URL", queue_url), ("CELERY_BROKER_URL", celery_broker_url)
    ):
        if url and url.startswith(REDIS_SCHEMES):
            _require_package(variable, "Redis", "redis")


#: The extras of Nexus that install a client package (setup.cfg), by the package's import name.
EXTRAS = {"psycopg": "postgres", "redis": "redis"}


def _require_package(variable: str, service: str, module: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        missing = isinstance(exc, ModuleNotFoundError) and (exc.name or module).split(".")[0] == module
        state = "is not installed" if missing else f"cannot be imported ({exc})"
        remedy = (
            f"install Nexus with its {EXTRAS[module]} extra: pip install -e '.[{EXTRAS[module]}]'"
            if module in EXTRAS
            else f"install it: pip install {module}"
        )
        raise ConfigError(variable, f"points at {service} but the {module} package {state}; {remedy}") from None


def _redis_url(env: _Reader) -> str | None:
    sentinels = env.raw("REDIS_SENTINELS")
    if sentinels is not None:
        for other in ("REDIS_URL", "REDIS_HOST"):
            if env.raw(other):
                raise ConfigError("REDIS_SENTINELS", f"set either REDIS_SENTINELS or {other}, not both")
        return SentinelAddress(
            sentinels=_sentinel_hosts("REDIS_SENTINELS", sentinels.split(",")),
            master=_sentinel_master(env),
            password=env.raw("REDIS_PASSWORD"),
            sentinel_password=env.raw("REDIS_SENTINEL_PASSWORD"),
        ).url
    if (env.raw("REDIS_URL") or "").startswith(SENTINEL_PREFIX):
        return _sentinel_url(env, "REDIS_URL")
    url = env.url("REDIS_URL", schemes=("redis", "rediss"))
    if url:
        return url
    host = env.raw("REDIS_HOST")
    if host is None:
        return None
    port = env.integer("REDIS_PORT", default=6379, minimum=1, maximum=65535)
    password = env.raw("REDIS_PASSWORD")
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/0"


SENTINEL_PREFIX = "redis+sentinel://"
REDIS_SCHEMES = ("redis://", "rediss://", SENTINEL_PREFIX)
SENTINEL_PORT = 26379
DEFAULT_SENTINEL_MASTER = "mymaster"
_MASTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class SentinelAddress:
    """A Redis primary found through Sentinel, written as
    `redis+sentinel://[[user]:password@]host:port,host:port/master[/db][?sentinel_password=...]`:
    the credentials are the primary's, `sentinel_password` the Sentinels' own."""

    sentinels: tuple[tuple[str, int], ...]
    master: str = DEFAULT_SENTINEL_MASTER
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str, variable: str = "REDIS_URL", *, default_master: str = DEFAULT_SENTINEL_MASTER,
              sentinel_password: str | None = None) -> "SentinelAddress":
        """Read the URL form; ConfigError naming `variable` when it is malformed."""
        if not url.startswith(SENTINEL_PREFIX):
            raise ConfigError(variable, f"must start with {SENTINEL_PREFIX}")
        rest = url[len(SENTINEL_PREFIX):]
        rest, _, query = rest.partition("?")
        netloc, _, path = rest.partition("/")
        userinfo, at, hosts = netloc.rpartition("@")
        username = password = None
        if at:
            user, colon, secret = userinfo.partition(":")
            username = unquote(user) or None
            password = unquote(secret) if colon and secret else None
        options = parse_qs(query, keep_blank_values=True)
        unknown = set(options) - {"sentinel_password"}
        if unknown:
            raise ConfigError(variable, f"unknown option {sorted(unknown)[0]!r}; only sentinel_password is understood")
        if options.get("sentinel_password"):
            sentinel_password = options["sentinel_password"][-1] or None
        parts = [part for part in path.split("/") if part]
        if len(parts) > 2:
            raise ConfigError(variable, "expected /master-name/db after the Sentinel addresses")
        master = parts[0] if parts else default_master
        if not _MASTER_NAME.fullmatch(master):
            raise ConfigError(variable, f"{master!r} is not a Sentinel master name")
        db = 0
        if len(parts) == 2:
            if not (parts[1].isascii() and parts[1].isdigit()) or int(parts[1]) > 1_000:
                raise ConfigError(variable, f"the database number must be a whole number, got {parts[1]!r}")
            db = int(parts[1])
        return cls(_sentinel_hosts(variable, hosts.split(",")), master, db, username, password, sentinel_password)

    @property
    def url(self) -> str:
        """The `redis+sentinel://` form (every process given it finds the same primary)."""
        auth = quote(self.username or "", safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        auth += "@" if auth else ""
        hosts = ",".join(_host_port(host, port) for host, port in self.sentinels)
        query = f"?sentinel_password={quote(self.sentinel_password, safe='')}" if self.sentinel_password else ""
        return f"{SENTINEL_PREFIX}{auth}{hosts}/{self.master}/{self.db}{query}"


def is_sentinel_url(url: str | None) -> bool:
    return bool(url) and url.startswith(SENTINEL_PREFIX)  # type: ignore[union-attr]


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _sentinel_hosts(variable: str, items: list[str]) -> tuple[tuple[str, int], ...]:
    hosts: list[tuple[str, int]] = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        try:
            parts = urlsplit("//" + item)
            port = parts.port or SENTINEL_PORT
        except ValueError:
            raise ConfigError(variable, f"{item!r} is not host:port") from None
        if not parts.hostname or parts.path or parts.username or parts.query:
            raise ConfigError(variable, f"{item!r} is not host:port")
        if (parts.hostname, port) not in hosts:
            hosts.append((parts.hostname, port))
    if not hosts:
        raise ConfigError(variable, "lists no Sentinel (host:port, comma-separated)")
    return tuple(hosts)


def _sentinel_master(env: _Reader) -> str:
    master = env.text("REDIS_SENTINEL_MASTER", default=DEFAULT_SENTINEL_MASTER)
    if not _MASTER_NAME.fullmatch(master):
        raise ConfigError("REDIS_SENTINEL_MASTER", f"{master!r} is not a Sentinel master name")
    return master


def _sentinel_url(env: _Reader, variable: str) -> str:
    """A `redis+sentinel://` URL read from `variable`, in its canonical form."""
    return SentinelAddress.parse(
        env.raw(variable) or "", variable, default_master=_sentinel_master(env),
        sentinel_password=env.raw("REDIS_SENTINEL_PASSWORD"),
    ).url


def _queue_url(env: _Reader, variable: str) -> str | None:
    """redis://, amqp://, or Redis behind Sentinel: `redis+sentinel://...` or kombu's
    `sentinel://host:port;sentinel://host:port` (master REDIS_SENTINEL_MASTER), kept as the former."""
    value = env.raw(variable)
    if value is None:
        return None
    if value.startswith(SENTINEL_PREFIX):
        return _sentinel_url(env, variable)
    if value.startswith("sentinel://"):
        first = urlsplit(value.split(";", 1)[0])
        hosts: list[str] = []
        for item in value.split(";"):
            item = item.strip()
            if not item:
                continue
            if not item.startswith("sentinel://"):
                raise ConfigError(variable, "every address of a sentinel:// URL must start with sentinel://")
            hosts.append(item[len("sentinel://"):].rpartition("@")[2].split("/", 1)[0])
        db = first.path.strip("/") or "0"
        auth = value[len("sentinel://"):].split(";", 1)[0].split("/", 1)[0].rpartition("@")
        canonical = f"{SENTINEL_PREFIX}{auth[0] + '@' if auth[1] else ''}{','.join(hosts)}/{_sentinel_master(env)}/{db}"
        return SentinelAddress.parse(
            canonical, variable, sentinel_password=env.raw("REDIS_SENTINEL_PASSWORD")
        ).url
    return env.url(variable, schemes=("redis", "rediss", "amqp", "amqps"))


FAULT_POINTS = ("after_commit",)


def _fault_points(env: _Reader, production: bool) -> dict[str, str]:
    """NEXUS_FAULT_POINTS=point:prefix,...: where the fault-injection tests make a process die."""
    value = env.raw("NEXUS_FAULT_POINTS")
    if value is None:
        return {}
    if production:
        raise ConfigError("NEXUS_FAULT_POINTS", "is for fault-injection tests and is refused when NEXUS_ENV=production")
    points: dict[str, str] = {}
    for item in value.split(","):
        point, _, prefix = item.strip().partition(":")
        if point not in FAULT_POINTS or not prefix:
            raise ConfigError(
                "NEXUS_FAULT_POINTS", f"expected POINT:PREFIX items with POINT one of {', '.join(FAULT_POINTS)}, got {item!r}"
            )
        points[point] = prefix
    return points


def _origins(env: _Reader, production: bool) -> tuple[str, ...]:
    names = [n for n in ("SOCKETIO_CORS_ORIGIN", "FRONTEND_URL") if env.raw(n)]
    origins: list[str] = []
    for name in names:
        for item in (env.raw(name) or "").split(","):
            origin = item.strip().rstrip("/")
            if not origin:
                continue
            if origin == "*":
                if production:
                    raise ConfigError(name, "'*' is not allowed when NEXUS_ENV=production; list the origins")
            else:
                _check_url(name, origin, ("http", "https"))
            if origin not in origins:
                origins.append(origin)
    if not origins:
        if production:
            return ()  # same-origin only
        return ("http://localhost:3000", "http://localhost:8080", "http://127.0.0.1:3000", "http://127.0.0.1:8080")
    return tuple(origins)


def _service_api_keys(env: _Reader, production: bool) -> tuple[str, ...]:
    # A key is named by its position, never quoted: the message ends up in logs.
    name = "NEXUS_SERVICE_API_KEYS"
    keys: list[str] = []
    for position, item in enumerate((env.raw(name) or "").split(","), start=1):
        key = item.strip()
        if not key:
            continue
        if len(key) < MIN_SECRET_BYTES:
            raise ConfigError(name, f"key #{position} is shorter than {MIN_SECRET_BYTES} characters")
        if not all("!" <= ch <= "~" for ch in key):
            raise ConfigError(name, f"key #{position} must be printable ASCII without spaces")
        if production and ("*" in key or len(set(key)) < MIN_KEY_DISTINCT_CHARACTERS):
            raise ConfigError(name, f"key #{position} looks like a placeholder; generate a random key")
        if key not in keys:
            keys.append(key)
    return tuple(keys)


def _metrics_token(env: _Reader) -> str | None:
    token = env.raw("NEXUS_METRICS_TOKEN")
    if token is not None and len(token) < MIN_SECRET_BYTES:
        raise ConfigError("NEXUS_METRICS_TOKEN", f"must be at least {MIN_SECRET_BYTES} characters long")
    return token


def _rate_limit(env: _Reader, name: str, default: str) -> str:
    """A rate limit in the `limits` notation ("300 per minute", "10/second"), checked now."""
    value = env.text(name, default=default)
    from limits import parse_many

    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(name, f"must read like '300 per minute' or '10/second', got {value!r}") from None
    return value


def _protocol_debug(value: str | None) -> bool:
    # DEBUG=socketio:* (or socket.io:*, engineio:*) turns on the protocol loggers, as in Node.
    if not value:
        return False
    return any(part.strip().startswith(("socketio", "socket.io", "engineio", "engine")) for part in value.split(","))


def _development_secret(instance_path: str) -> str:
    """A random key kept in the instance folder, so development tokens survive restarts."""
    path = Path(instance_path) / "jwt-secret"
    try:
        existing = path.read_text().strip()
        if len(existing.encode()) >= MIN_SECRET_BYTES:
            return existing
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    return secret

