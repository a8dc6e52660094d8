"""A client cannot write an ERROR line: python-engineio's reports of a client's mistakes (unknown
session, transport, origin, protocol version, method) become counted warnings, one line per kind and
interval; Nexus's own client-mistake warnings are counted too. The engine.io requests below go
through its public API (Server.handle_request), so a release that rewords a message fails here."""
from __future__ import annotations

import io
import logging
import re
import secrets

import engineio
import pytest
import requests
import websocket

from nexus import logs
from nexus.logs import ClientMistakes, MistakeCountingFilter, ProtocolLogger, engineio_mistake
from nexus.services.metrics import Metrics
from tests.security.attack import serving, ws_url


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def mistakes(clock) -> ClientMistakes:
    return ClientMistakes(every_s=60, clock=clock)


@pytest.fixture
def engine(mistakes):
    """A python-engineio server logging through Nexus's adapter (the logger Nexus gives it)."""
    return engineio.Server(async_mode="threading", logger=ProtocolLogger(logging.getLogger("engineio"), mistakes),
                           cors_allowed_origins=["https://app.example.com"])


def request(engine, method: str = "GET", query: str = "EIO=4&transport=polling", **headers: str) -> str:
    environ = {"REQUEST_METHOD": method, "QUERY_STRING": query, "PATH_INFO": "/engine.io/",
               "wsgi.input": io.BytesIO(b""), "wsgi.url_scheme": "http", "HTTP_HOST": "localhost",
               **{"HTTP_" + name.upper(): value for name, value in headers.items()}}
    status = []
    engine.handle_request(environ, lambda line, headers_: status.append(line))
    return status[0]


MISTAKES = [
    ("invalid_session", dict(query="EIO=4&transport=polling&sid=AbCdEfGhIjKlMnOpQrSt")),
    ("invalid_session", dict(method="POST", query="EIO=4&transport=polling&sid=AbCdEfGhIjKlMnOpQrSt")),
    ("invalid_transport", dict(query="EIO=4&transport=carrier-pigeon")),
    ("unsupported_version", dict(query="EIO=3&transport=polling")),
    ("invalid_upgrade", dict(query="EIO=4&transport=websocket")),
    ("origin_refused", dict(origin="https://evil.example")),
    ("method_not_allowed", dict(method="PUT")),
]


@pytest.mark.parametrize(("kind", "bad"), MISTAKES)
def test_each_engineio_mistake_is_a_counted_warning_never_an_error(engine, mistakes, caplog, kind, bad):
    caplog.set_level(logging.INFO, logger="engineio")
    for _ in range(5):
        assert request(engine, **bad).startswith(("400", "405"))
    assert mistakes.counts() == {kind: 5}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    lines = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1 and lines[0].getMessage().startswith(f"client error {kind}: ")
    assert "further occurrences" not in lines[0].getMessage()
    assert not [r for r in caplog.records if r.levelno == logging.INFO and "client" in r.getMessage()]


def test_a_line_per_kind_and_interval_says_how_many_went_unlogged(mistakes, clock, caplog):
    logger = logging.getLogger("engineio")
    caplog.set_level(logging.WARNING, logger="engineio")
    for _ in range(4):
        mistakes.report(logger, "invalid_session", "Invalid session x")
    mistakes.report(logger, "invalid_transport", "Invalid transport")
    clock.now += 60
    mistakes.report(logger, "invalid_session", "Invalid session y")
    assert [r.getMessage() for r in caplog.records] == [
        "client error invalid_session: Invalid session x",
        "client error invalid_transport: Invalid transport",
        "client error invalid_session: Invalid session y (3 more since the last line)",
    ]
    assert mistakes.counts() == {"invalid_session": 5, "invalid_transport": 1}


def test_other_engineio_lines_pass_unchanged(mistakes, caplog):
    adapter = ProtocolLogger(logging.getLogger("engineio"), mistakes)
    caplog.set_level(logging.INFO, logger="engineio")
    adapter.error("The WebSocket transport is not available (further occurrences of this error will be "
                  "logged with level INFO)")
    adapter.info("%s: Sending packet %s data %s", "sid", "MESSAGE", "2")
    adapter.warning("Cannot send to sid %s", "abc")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "The WebSocket transport is not available (further occurrences of this error will be "
                        "logged with level INFO)"),
        (logging.INFO, "sid: Sending packet MESSAGE data 2"),
        (logging.WARNING, "Cannot send to sid abc"),
    ]
    assert mistakes.counts() == {}


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Invalid session None", ("invalid_session", "Invalid session None")),
        ("https://x.example is not an accepted origin. (further occurrences of this error will be logged "
         "with level INFO)", ("origin_refused", "https://x.example is not an accepted origin.")),
        ("Socket for session abc is not connected", ("not_connected", "Socket for session abc is not connected")),
        ("Unexpected HTTP request for session abc", ("unexpected_http", "Unexpected HTTP request for session abc")),
        ("Server initialized for gevent.", None),
        (None, None),
    ],
)
def test_engineio_messages_are_classified_precisely(message, expected):
    assert engineio_mistake(message) == expected


def test_nexus_own_warnings_are_counted_once_per_line(mistakes, caplog):
    logger = logging.getLogger("nexus.server")
    counting = MistakeCountingFilter(mistakes)
    logger.addFilter(counting)
    try:
        caplog.set_level(logging.WARNING, logger="nexus.server")
        logger.warning("refused a WebSocket from origin %r", "https://evil.example")
        logger.warning("dropped a WebSocket whose client stopped reading (%d bytes waiting)", 10)
    finally:
        logger.removeFilter(counting)
    assert mistakes.counts() == {"origin_refused": 1}
    assert len(caplog.records) == 2


def test_configuring_twice_installs_one_counting_filter(config_factory):
    config = config_factory()
    logs.configure_logging(config)
    logs.configure_logging(config)
    filters = [f for f in logging.getLogger("nexus.server").filters if isinstance(f, MistakeCountingFilter)]
    assert len(filters) == 1


def test_the_counts_are_exported(monkeypatch):
    monkeypatch.setattr(logs, "CLIENT_MISTAKES", ClientMistakes())
    import nexus.services.metrics as metrics_module

    monkeypatch.setattr(metrics_module, "CLIENT_MISTAKES", logs.CLIENT_MISTAKES)
    logs.CLIENT_MISTAKES.count("invalid_session")
    logs.CLIENT_MISTAKES.count("invalid_session")
    registry = Metrics().registry
    assert registry.get_sample_value("nexus_client_errors_total", {"kind": "invalid_session"}) == 2


# -- a real server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"SOCKETIO_CORS_ORIGIN": "https://app.example.com", "NEXUS_METRICS_TOKEN": secrets.token_urlsafe(40)}
    with serving(tmp_path_factory.mktemp("mistakes"), env) as running:
        running.metrics_token = env["NEXUS_METRICS_TOKEN"]
        yield running


def client_errors(server) -> dict[str, float]:
    text = requests.get(server.url + "/metrics", headers={"Authorization": f"Bearer {server.metrics_token}"},
                        timeout=10).text
    return {kind: float(value) for kind, value in
            re.findall(r'^nexus_client_errors_total\{kind="(\w+)"\} ([0-9.e+]+)$', text, re.MULTILINE)}


def test_a_client_cannot_write_an_error_line(server):
    base = server.url + "/socket.io/"
    before = client_errors(server)
    for _ in range(3):
        assert requests.get(base, params={"EIO": "4", "transport": "polling", "sid": "AbCdEfGhIjKlMnOpQrSt"},
                            timeout=5).status_code == 400
        assert requests.post(base, params={"EIO": "4", "transport": "polling", "sid": "AbCdEfGhIjKlMnOpQrSt"},
                             data=b"4hi", timeout=5).status_code == 400
        assert requests.get(base, params={"EIO": "4", "transport": "carrier-pigeon"}, timeout=5).status_code == 400
        assert requests.get(base, params={"EIO": "4", "transport": "polling"}, timeout=5,
                            headers={"Origin": "https://evil.example"}).status_code in (400, 403)
        with pytest.raises(websocket.WebSocketBadStatusException):
            websocket.create_connection(ws_url(server), timeout=5, origin="https://evil.example")
    after = client_errors(server)
    gained = {kind: after.get(kind, 0) - before.get(kind, 0) for kind in after}
    assert gained.get("invalid_session", 0) >= 6, gained
    assert gained.get("invalid_transport", 0) >= 3, gained
    assert gained.get("origin_refused", 0) >= 6, gained
    log = server.log()
    assert not re.search(r"^\S+ \S+ (ERROR|CRITICAL) ", log, re.MULTILINE), log
    assert "Traceback" not in log
