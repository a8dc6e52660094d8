"""Configuration: defaults, the SOCKETIO_*, FRONTEND_URL and REDIS_* variables, and refusals that name the variable."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
import sys

import pytest

from nexus.config import Config, ConfigError, SentinelAddress
from tests.support.services import ROOT

SECRET = "s" * 40


def load(tmp_path, **environ: str) -> Config:
    return Config.from_env({"NEXUS_INSTANCE_PATH": str(tmp_path), **environ})


def test_defaults_are_a_local_embedded_setup(tmp_path):
    config = load(tmp_path)
    assert config.env == "development"
    assert config.port == 5000
    assert config.database_url == f"sqlite:///{tmp_path / 'nexus.db'}"
    assert config.message_queue_url is None and config.redis_url is None
    assert config.allow_guests is True
    assert config.ping_interval_ms == 25_000 and config.ping_timeout_ms == 60_000
    assert config.max_payload_bytes == 1_000_000
    # a development key is generated once and kept, so tokens survive a restart
    assert len(config.jwt_secret) >= 32
    assert load(tmp_path).jwt_secret == config.jwt_secret
    assert (tmp_path / "jwt-secret").stat().st_mode & 0o077 == 0


def test_the_documented_variables_are_read(tmp_path):
    config = load(
        tmp_path,
        SOCKETIO_CORS_ORIGIN="http://localhost:3000,http://localhost:8080",
        FRONTEND_URL="https://app.example.com",
        SOCKETIO_CORS_CREDENTIALS="false",
        SOCKETIO_RATE_LIMIT_WINDOW_MS="1000",
        SOCKETIO_RATE_LIMIT_MAX_REQUESTS="10",
        SOCKETIO_PING_TIMEOUT="20000",
        SOCKETIO_PING_INTERVAL="10000",
        SOCKETIO_MAX_PAYLOAD="2048",
        SOCKETIO_REDIS_PREFIX="socket.io",
        PORT="4000",
    )
    assert config.cors_origins == ("http://localhost:3000", "http://localhost:8080", "https://app.example.com")
    assert config.cors_credentials is False
    assert (config.rate_limit_window_ms, config.rate_limit_max_requests) == (1000, 10)
    assert (config.ping_timeout_ms, config.ping_interval_ms) == (20_000, 10_000)
    assert config.max_payload_bytes == 2048
    assert config.queue_channel == "socket.io"
    assert config.port == 4000


def test_redis_host_port_password_and_enabled_flag_make_the_queue(tmp_path):
    config = load(
        tmp_path, REDIS_HOST="cache.internal", REDIS_PORT="6380", REDIS_PASSWORD="p@ss:word", SOCKETIO_REDIS_ENABLED="true"
    )
    assert config.redis_url == "redis://:p%40ss%3Aword@cache.internal:6380/0"
    assert config.message_queue_url == config.redis_url
    assert load(tmp_path, REDIS_URL="redis://r:6379/1").message_queue_url is None  # not enabled
    assert load(tmp_path, MESSAGE_QUEUE_URL="amqp://guest:guest@mq:5672//").message_queue_url.startswith("amqp://")


def test_heroku_postgres_urls_are_rewritten(tmp_path):
    config = load(tmp_path, DATABASE_URL="postgres://u:p@db.example.com:5432/app")
    assert config.database_url == "postgresql+psycopg://u:p@db.example.com:5432/app"
    assert load(tmp_path, DATABASE_URL="postgresql://u@h/db").database_url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"PORT": "http"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"SOCKETIO_PING_INTERVAL": "-5"}, "SOCKETIO_PING_INTERVAL"),
        ({"SOCKETIO_MAX_PAYLOAD": "1e6"}, "SOCKETIO_MAX_PAYLOAD"),
        ({"SOCKETIO_CORS_CREDENTIALS": "maybe"}, "SOCKETIO_CORS_CREDENTIALS"),
        ({"SOCKETIO_CORS_ORIGIN": "localhost:3000"}, "SOCKETIO_CORS_ORIGIN"),
        ({"MESSAGE_QUEUE_URL": "kafka://broker:9092"}, "MESSAGE_QUEUE_URL"),
        ({"MESSAGE_QUEUE_URL": "redis://"}, "MESSAGE_QUEUE_URL"),
        ({"REDIS_URL": "http://cache"}, "REDIS_URL"),
        ({"DATABASE_URL": "mysql://db/app"}, "DATABASE_URL"),
        ({"JWT_SECRET": "short"}, "JWT_SECRET"),
        ({"NEXUS_ENV": "staging"}, "NEXUS_ENV"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"NEXUS_ENV": "production"}, "JWT_SECRET"),
        ({"NEXUS_ENV": "production", "JWT_SECRET": SECRET, "SOCKETIO_CORS_ORIGIN": "*"}, "SOCKETIO_CORS_ORIGIN"),
        ({"NEXUS_ENV": "production", "JWT_SECRET": SECRET, "FRONTEND_URL": "*"}, "FRONTEND_URL"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(tmp_path, environ, variable):
    with pytest.raises(ConfigError) as error:
        load(tmp_path, **environ)
    assert error.value.variable == variable
    assert str(error.value).startswith(variable + ":")


def test_production_is_safe_by_default(tmp_path):
    config = load(tmp_path, NEXUS_ENV="production", JWT_SECRET=SECRET)
    assert config.host == "0.0.0.0"
    assert config.cors_origins == ()  # same origin only, until origins are listed
    assert config.auto_migrate is False and config.create_demo_users is False
    assert config.log_json is True
    assert load(tmp_path, NODE_ENV="production", JWT_SECRET=SECRET).env == "production"


def test_protocol_debug_switch(tmp_path):
    assert load(tmp_path, DEBUG="socket.io:*").protocol_debug is True
    assert load(tmp_path, DEBUG="socketio:*,engineio:*").protocol_debug is True
    assert load(tmp_path, DEBUG="express:*").protocol_debug is False


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"PORT": "abc"}, "PORT: must be a whole number"),
        ({"NEXUS_ENV": "production"}, "JWT_SECRET: is required when NEXUS_ENV=production"),
    ],
)
def test_the_server_refuses_to_start_and_names_the_variable(tmp_path, environ, message):
    env = {"PATH": "/usr/bin:/bin", "NEXUS_INSTANCE_PATH": str(tmp_path), **environ}
    result = subprocess.run(
        [sys.executable, "-m", "nexus", "serve"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert f"nexus: configuration error: {message}" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_procfile_server_refuses_to_start_and_names_the_variable(tmp_path):
    from tests.support.live import procfile_command
    from tests.support.services import free_port

    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "PORT": str(free_port()),
        "NEXUS_ENV": "production",
        "NEXUS_INSTANCE_PATH": str(tmp_path),
    }
    result = subprocess.run(
        ["bash", "-c", "exec " + procfile_command("web")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3  # gunicorn gives up instead of respawning the worker forever
    assert "nexus: configuration error: JWT_SECRET: is required when NEXUS_ENV=production" in result.stderr
    # Production logs are JSON, the refusal too: one object with the variable as a field.
    [refusal] = [json.loads(line) for line in result.stderr.splitlines() if "configuration error" in line]
    assert (refusal["event"], refusal["variable"], refusal["level"]) == ("configuration_error", "JWT_SECRET", "ERROR")
    assert result.stderr.count("Booting worker") == 1


POSTGRES_EXTRA = "install Nexus with its postgres extra: pip install -e '.[postgres]'"
REDIS_EXTRA = "install Nexus with its redis extra: pip install -e '.[redis]'"


@pytest.mark.parametrize(
    ("environ", "variable", "missing"),
    [
        ({"DATABASE_URL": "postgres://u:secret@db.example.com/app"}, "DATABASE_URL", "psycopg"),
        ({"MESSAGE_QUEUE_URL": "redis://127.0.0.1:6379/0"}, "MESSAGE_QUEUE_URL", "redis"),
        ({"REDIS_URL": "rediss://cache:6380/1"}, "REDIS_URL", "redis"),
        ({"REDIS_HOST": "cache.internal"}, "REDIS_HOST", "redis"),
        ({"REDIS_SENTINELS": "s1:26379,s2"}, "REDIS_SENTINELS", "redis"),
        ({"MESSAGE_QUEUE_URL": "sentinel://s1:26379;sentinel://s2:26379"}, "MESSAGE_QUEUE_URL", "redis"),
        ({"CELERY_BROKER_URL": "redis://broker/0"}, "CELERY_BROKER_URL", "redis"),
    ],
)
def test_a_url_whose_client_package_is_missing_names_the_extra(tmp_path, monkeypatch, environ, variable, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # what Python does for a package that is not installed
    with pytest.raises(ConfigError) as error:
        load(tmp_path, **environ)
    service, extra = ("PostgreSQL", POSTGRES_EXTRA) if missing == "psycopg" else ("Redis", REDIS_EXTRA)
    assert str(error.value) == f"{variable}: points at {service} but the {missing} package is not installed; {extra}"
    assert "secret" not in str(error.value)  # the URL's password stays out of the message


def test_urls_that_need_no_optional_package_start_without_them(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.setitem(sys.modules, "redis", None)
    config = load(
        tmp_path, MESSAGE_QUEUE_URL="amqp://guest:guest@mq:5672//", DATABASE_URL=f"sqlite:///{tmp_path}/a.db"
    )
    assert config.message_queue_url.startswith("amqp://") and config.database_url.startswith("sqlite:")


def test_serve_without_the_redis_package_stops_with_a_configuration_error(tmp_path):
    # `nexus serve` in a process where the redis package cannot be imported (a base install).
    code = "import sys; sys.modules['redis'] = None; from nexus.__main__ import main; main()"
    env = {"PATH": "/usr/bin:/bin", "NEXUS_INSTANCE_PATH": str(tmp_path), "MESSAGE_QUEUE_URL": "redis://127.0.0.1/0"}
    result = subprocess.run(
        [sys.executable, "-c", code, "serve"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "nexus: configuration error: MESSAGE_QUEUE_URL: points at Redis but the redis package is not installed; "
        + REDIS_EXTRA
    )


KEY_A = "svcA-" + "q7Lm2Xz9Rt" * 3
KEY_B = "svcB-" + "Hc4Wn8Pv1K" * 3


def test_service_api_keys_are_a_comma_separated_list(tmp_path):
    assert load(tmp_path).service_api_keys == ()
    config = load(tmp_path, NEXUS_SERVICE_API_KEYS=f" {KEY_A} ,,{KEY_B},{KEY_A}, ")
    assert config.service_api_keys == (KEY_A, KEY_B)
    assert KEY_A not in repr(config)  # secrets stay out of logs
    production = load(tmp_path, NEXUS_ENV="production", JWT_SECRET=SECRET, NEXUS_SERVICE_API_KEYS=KEY_B)
    assert production.service_api_keys == (KEY_B,)


@pytest.mark.parametrize(
    ("value", "production", "problem"),
    [
        ("short-key", False, "key #1 is shorter than 32 characters"),
        (f"{KEY_A},{'x' * 31}", False, "key #2 is shorter than 32 characters"),
        (f"{KEY_A[:20]} {KEY_A[20:]}", False, "key #1 must be printable ASCII without spaces"),
        ("ключ" * 10, False, "key #1 must be printable ASCII without spaces"),
        ("*" * 40, True, "key #1 looks like a placeholder"),
        (f"{KEY_A},{KEY_B[:-1]}*", True, "key #2 looks like a placeholder"),
        ("x" * 40, True, "key #1 looks like a placeholder"),
        ("changeme" * 5, True, "key #1 looks like a placeholder"),
    ],
)
def test_weak_service_api_keys_are_refused_without_quoting_them(tmp_path, value, production, problem):
    environ = {"NEXUS_SERVICE_API_KEYS": value}
    if production:
        environ |= {"NEXUS_ENV": "production", "JWT_SECRET": SECRET}
    with pytest.raises(ConfigError) as error:
        load(tmp_path, **environ)
    assert error.value.variable == "NEXUS_SERVICE_API_KEYS"
    assert str(error.value).startswith("NEXUS_SERVICE_API_KEYS: " + problem)
    for key in value.split(","):
        assert key not in str(error.value)
    if not production:
        return
    # Outside production a placeholder is allowed, for local setups and tests.
    assert load(tmp_path, NEXUS_SERVICE_API_KEYS=value).service_api_keys


def test_dashboard_settings(tmp_path):
    config = load(tmp_path)
    assert config.dashboard_session_s == 8 * 3600
    assert config.dashboard_secure_cookie is False  # plain http works on a developer's machine
    assert config.socketio_client_dir is None
    assert load(tmp_path, NEXUS_ENV="production", JWT_SECRET=SECRET).dashboard_secure_cookie is True
    custom = load(
        tmp_path,
        NEXUS_DASHBOARD_SESSION_S="600",
        NEXUS_DASHBOARD_SECURE_COOKIE="true",
        NEXUS_SOCKETIO_CLIENT_DIR="/srv/assets/socket.io-client/dist",
    )
    assert custom.dashboard_session_s == 600 and custom.dashboard_secure_cookie is True
    assert custom.socketio_client_dir == "/srv/assets/socket.io-client/dist"


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"NEXUS_DASHBOARD_SESSION_S": "10"}, "NEXUS_DASHBOARD_SESSION_S"),
        ({"NEXUS_DASHBOARD_SESSION_S": "forever"}, "NEXUS_DASHBOARD_SESSION_S"),
        ({"NEXUS_DASHBOARD_SECURE_COOKIE": "sometimes"}, "NEXUS_DASHBOARD_SECURE_COOKIE"),
    ],
)
def test_bad_dashboard_settings_name_the_variable(tmp_path, environ, variable):
    with pytest.raises(ConfigError) as error:
        load(tmp_path, **environ)
    assert error.value.variable == variable


def test_fault_points_and_the_outbox_bound(tmp_path):
    config = load(tmp_path, NEXUS_FAULT_POINTS="after_commit:crash-", NEXUS_OUTBOX_STALE_MS="1500")
    assert config.fault_points == {"after_commit": "crash-"}
    assert config.outbox_stale_s == 1.5
    assert load(tmp_path).fault_points == {} and load(tmp_path).outbox_stale_s == 3.0


@pytest.mark.parametrize(
    "environ, problem",
    [
        ({"NEXUS_FAULT_POINTS": "before_lunch:x"}, "POINT:PREFIX"),
        ({"NEXUS_FAULT_POINTS": "after_commit"}, "POINT:PREFIX"),
        ({"NEXUS_FAULT_POINTS": "after_commit:x", "NEXUS_ENV": "production", "JWT_SECRET": SECRET},
         "refused when NEXUS_ENV=production"),
    ],
)
def test_fault_points_are_refused_when_malformed_or_in_production(tmp_path, environ, problem):
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, **environ)
    assert refused.value.variable == "NEXUS_FAULT_POINTS"
    assert problem in refused.value.problem


def test_the_outbox_bound_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="NEXUS_OUTBOX_STALE_MS"):
        load(tmp_path, NEXUS_OUTBOX_STALE_MS="50")


def test_redis_behind_sentinel_from_the_sentinel_list(tmp_path):
    config = load(
        tmp_path, REDIS_SENTINELS=" s1:26379, s2:26380,s3 ", REDIS_SENTINEL_MASTER="cache-main",
        REDIS_PASSWORD="p@ss:word", REDIS_SENTINEL_PASSWORD="s/pw", SOCKETIO_REDIS_ENABLED="true",
    )
    assert config.redis_url == (
        "redis+sentinel://:p%40ss%3Aword@s1:26379,s2:26380,s3:26379/cache-main/0?sentinel_password=s%2Fpw"
    )
    assert config.message_queue_url == config.redis_url == config.shared_state_url
    address = SentinelAddress.parse(config.redis_url)
    assert address.sentinels == (("s1", 26379), ("s2", 26380), ("s3", 26379))
    assert (address.master, address.db, address.password, address.sentinel_password) == (
        "cache-main", 0, "p@ss:word", "s/pw")
    assert "p@ss" not in repr(address) and "s/pw" not in repr(address)
    assert SentinelAddress.parse(load(tmp_path, REDIS_SENTINELS="s1").redis_url).master == "mymaster"


def test_redis_behind_sentinel_as_urls(tmp_path):
    config = load(tmp_path, REDIS_URL="redis+sentinel://u:pw@a:1,b:2/svc/3")
    assert config.redis_url == "redis+sentinel://u:pw@a:1,b:2/svc/3"
    assert config.message_queue_url is None  # a queue only when asked for
    # The master name comes from REDIS_SENTINEL_MASTER when the URL has none.
    assert load(tmp_path, REDIS_URL="redis+sentinel://a,b", REDIS_SENTINEL_MASTER="m").redis_url == (
        "redis+sentinel://a:26379,b:26379/m/0")
    # kombu's own form for the queue (and the Celery broker), its master named by REDIS_SENTINEL_MASTER.
    config = load(tmp_path, MESSAGE_QUEUE_URL="sentinel://:pw@a:1/2;sentinel://:pw@b:2/2",
                  CELERY_BROKER_URL="sentinel://c:3", REDIS_SENTINEL_MASTER="queue", REDIS_SENTINEL_PASSWORD="spw")
    assert config.message_queue_url == "redis+sentinel://:pw@a:1,b:2/queue/2?sentinel_password=spw"
    assert config.celery_broker_url == "redis+sentinel://c:3/queue/0?sentinel_password=spw"
    assert config.redis_url is None and config.shared_state_url == config.message_queue_url
    # A sentinel password in the URL wins over REDIS_SENTINEL_PASSWORD.
    url = load(tmp_path, REDIS_URL="redis+sentinel://a/m?sentinel_password=x", REDIS_SENTINEL_PASSWORD="y").redis_url
    assert SentinelAddress.parse(url).sentinel_password == "x"


@pytest.mark.parametrize(
    ("environ", "variable", "problem"),
    [
        ({"REDIS_SENTINELS": " , "}, "REDIS_SENTINELS", "lists no Sentinel"),
        ({"REDIS_SENTINELS": "s1:port"}, "REDIS_SENTINELS", "is not host:port"),
        ({"REDIS_SENTINELS": "s1:99999"}, "REDIS_SENTINELS", "is not host:port"),
        ({"REDIS_SENTINELS": "s1", "REDIS_URL": "redis://r:6379/0"}, "REDIS_SENTINELS", "not both"),
        ({"REDIS_SENTINELS": "s1", "REDIS_HOST": "r"}, "REDIS_SENTINELS", "not both"),
        ({"REDIS_SENTINELS": "s1", "REDIS_SENTINEL_MASTER": "my master"}, "REDIS_SENTINEL_MASTER", "master name"),
        ({"REDIS_URL": "redis+sentinel:///mymaster"}, "REDIS_URL", "lists no Sentinel"),
        ({"REDIS_URL": "redis+sentinel://a/m/x"}, "REDIS_URL", "database number"),
        ({"REDIS_URL": "redis+sentinel://a/m/\u00b3"}, "REDIS_URL", "database number"),  # a digit int() refuses
        ({"REDIS_URL": "redis+sentinel://a/m/0/extra"}, "REDIS_URL", "/master-name/db"),
        ({"REDIS_URL": "redis+sentinel://a/m?password=x"}, "REDIS_URL", "unknown option"),
        ({"MESSAGE_QUEUE_URL": "redis+sentinel://a:b/m"}, "MESSAGE_QUEUE_URL", "is not host:port"),
        ({"MESSAGE_QUEUE_URL": "sentinel://a:1;redis://b:2"}, "MESSAGE_QUEUE_URL", "must start with sentinel://"),
        ({"CELERY_BROKER_URL": "sentinel://"}, "CELERY_BROKER_URL", "lists no Sentinel"),
    ],
)
def test_bad_sentinel_settings_name_the_variable(tmp_path, environ, variable, problem):
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, **environ)
    assert refused.value.variable == variable
    assert problem in refused.value.problem
