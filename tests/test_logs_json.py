"""Log lines as data: events with fields (nexus.logs.log_event) read as sentences with key=value in
development and as one JSON object per line, fields as fields, in production; the HTTP access lines
(nexus.access) carry a request id and a path without query values."""
from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys

import pytest

from nexus import access, logs
from nexus.logs import ClientMistakes, JSONFormatter, ReadableFormatter, RedactingFilter, log_event

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXBhcnQ"


class Lines:
    """A logger writing through Nexus's filter and one formatter into a buffer."""

    def __init__(self, formatter: logging.Formatter, name: str = "nexus.test.lines"):
        self.buffer = io.StringIO()
        self.handler = logging.StreamHandler(self.buffer)
        self.handler.setFormatter(formatter)
        self.handler.addFilter(RedactingFilter())
        # A logger of its own, outside logging's registry: pytest attaches its capture handler to
        # every registered logger that does not propagate, and a captured lone surrogate cannot be
        # sent back by a pytest-xdist worker.
        self.logger = logging.Logger(name)
        self.logger.handlers = [self.handler]
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)

    def lines(self) -> list[str]:
        return self.buffer.getvalue().splitlines()

    def objects(self) -> list[dict]:
        return [json.loads(line) for line in self.lines()]


@pytest.fixture
def as_json():
    lines = Lines(JSONFormatter())
    yield lines
    lines.logger.handlers = []


@pytest.fixture
def as_text():
    lines = Lines(ReadableFormatter(), "nexus.test.text")
    yield lines
    lines.logger.handlers = []


def test_an_event_is_a_sentence_with_key_value_in_text(as_text):
    log_event(as_text.logger, "connected", ns="/chat", sid="abc", user="7")
    log_event(as_text.logger, "events_refused", "refused {total} events in the last {seconds:.1f} s: {codes}",
              total=3, seconds=1.25, codes={"FORBIDDEN": 1, "RATE_LIMITED": 2}, ns="/")
    first, second = as_text.lines()
    assert first.endswith(" INFO    nexus.test.text: connected ns=/chat sid=abc user=7")
    assert second.endswith(": refused 3 events in the last 1.2 s: FORBIDDEN=1, RATE_LIMITED=2 ns=/")


def test_an_event_is_one_json_object_whose_fields_are_fields(as_json):
    log_event(as_json.logger, "connected", ns="/chat", sid="abc", user="7")
    log_event(as_json.logger, "events_refused", "refused {total} events: {codes}", level=logging.WARNING,
              total=3, codes={"FORBIDDEN": 1}, missing=["a", "b"])
    connected, refused = as_json.objects()
    assert connected["event"] == "connected" and connected["message"] == "connected"
    assert (connected["ns"], connected["sid"], connected["user"]) == ("/chat", "abc", "7")
    assert connected["level"] == "INFO" and connected["logger"] == "nexus.test.lines"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", connected["time"])
    assert refused["level"] == "WARNING" and refused["message"] == "refused 3 events: FORBIDDEN=1"
    assert refused["total"] == 3 and refused["codes"] == {"FORBIDDEN": 1} and refused["missing"] == ["a", "b"]


def test_plain_records_and_extra_fields_are_json_too(as_json):
    as_json.logger.info("plain %s line", "old-style")
    as_json.logger.info("with fields", extra={"fields": {"durationMs": 1.5, "status": 200}})
    plain, extra = as_json.objects()
    assert plain["message"] == "plain old-style line" and "event" not in plain
    assert extra["durationMs"] == 1.5 and extra["status"] == 200


def test_a_field_cannot_overwrite_the_line_keys(as_json):
    log_event(as_json.logger, "odd", time="yesterday", level_="x", logger="mine", message="m")
    entry, = as_json.objects()
    assert entry["event"] == "odd" and entry["logger"] == "nexus.test.lines" and entry["message"] == "odd"
    assert (entry["time_"], entry["logger_"], entry["message_"]) == ("yesterday", "mine", "m")


def test_tokens_and_line_breaks_do_not_survive_in_fields_or_messages(as_json, as_text):
    for lines in (as_json, as_text):
        log_event(lines.logger, "forged", "detail {detail}", detail=f"x\r\n2099 CRITICAL forged ?token=abc {JWT}",
                  path="/socket.io/?token=abc", header=f"Bearer {JWT}")
    entry, = as_json.objects()
    assert len(as_json.lines()) == 1 and len(as_text.lines()) == 1
    everything = as_json.buffer.getvalue() + as_text.buffer.getvalue()
    assert JWT not in everything and "token=abc" not in everything
    assert entry["detail"].startswith("x\r\n2099")  # JSON escapes the line break; the value is kept
    assert entry["path"] == "/socket.io/?token=[redacted]"


def test_exceptions_are_one_field(as_json):
    try:
        raise ValueError(f"bad {JWT}")
    except ValueError:
        log_event(as_json.logger, "internal_error", level=logging.ERROR, exc_info=True, ref="abc123")
    entry, = as_json.objects()
    assert entry["ref"] == "abc123" and entry["level"] == "ERROR"
    assert "ValueError" in entry["exception"] and JWT not in entry["exception"]


def test_text_that_json_cannot_encode_as_utf8_is_escaped(as_json):
    log_event(as_json.logger, "odd_text", name="lone \ud800 surrogate")
    entry, = as_json.objects()
    assert entry["name"] == "lone \ud800 surrogate"


def test_a_client_mistake_is_an_event_with_its_kind(as_json, as_text):
    mistakes = ClientMistakes(every_s=60, clock=lambda: 0.0)
    mistakes.report(as_json.logger, "invalid_session", "Invalid session x")
    mistakes.report(as_text.logger, "invalid_transport", "Invalid transport")
    entry, = as_json.objects()
    assert entry["event"] == "client_error" and entry["level"] == "WARNING"
    assert (entry["kind"], entry["detail"]) == ("invalid_session", "Invalid session x")
    assert "unlogged" not in entry
    assert as_text.lines()[0].endswith("client error invalid_transport: Invalid transport")


def test_a_disabled_level_builds_nothing(as_json):
    as_json.logger.setLevel(logging.INFO)
    log_event(as_json.logger, "chatter", level=logging.DEBUG, value=object())
    assert as_json.lines() == []


def test_configure_logging_picks_the_format(config_factory):
    written = io.StringIO()
    for log_json in (True, False):
        logs.configure_logging(config_factory(log_json=log_json))
        handler, = [h for h in logging.getLogger().handlers if h.get_name() == "nexus"]
        handler.setStream(written)
        try:
            log_event(logging.getLogger("nexus.test.configured"), "configured", mode="json" if log_json else "text")
        finally:
            handler.setStream(sys.stderr)
    first, second = written.getvalue().splitlines()
    assert json.loads(first)["mode"] == "json"
    assert second.endswith("nexus.test.configured: configured mode=text")


# -- the access middleware --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "kept"),
    [("abc-123", True), ("a" * 128, True), ("a" * 129, False), ("has space", False), ("tab\there", False),
     ("", False), (None, False), ("é", False), ("line\r\nbreak", False)],
)
def test_a_request_id_is_kept_only_when_sane(given, kept):
    made = access.request_id(given)
    if kept:
        assert made == given
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", made)


def test_the_logged_path_keeps_query_keys_without_values():
    environ = {"PATH_INFO": "/socket.io/", "QUERY_STRING": "EIO=4&transport=websocket&token=secret&&flag"}
    assert access.loggable_path(environ) == "/socket.io/?EIO&transport&token&flag"
    assert access.loggable_path({"PATH_INFO": "/caf\xc3\xa9", "QUERY_STRING": ""}) == "/café"
    assert access.loggable_path({"PATH_INFO": "/health"}) == "/health"


def _wsgi(status: str = "200 OK", body: list[bytes] | None = None, generator: bool = False):
    def app(environ, start_response):
        start_response(status, [("Content-Type", "text/plain"), ("X-Request-ID", "from-the-app")])
        if generator:
            return iter(body or [b"ok"])
        return body or [b"ok"]

    return app


def call(middleware, path: str = "/api/x", query: str = "", **headers: str):
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query, "REMOTE_ADDR": "203.0.113.7",
               **{"HTTP_" + name.upper(): value for name, value in headers.items()}}
    answered = {}

    def start_response(status, headers, exc_info=None):
        answered["status"], answered["headers"] = status, headers

    body = middleware(environ, start_response)
    content = b"".join(body)
    getattr(body, "close", lambda: None)()
    return answered, content, environ


@pytest.fixture
def access_lines(as_json, monkeypatch):
    monkeypatch.setattr(access, "log", as_json.logger)
    return as_json


@pytest.mark.parametrize("generator", [False, True])
def test_a_request_gets_an_access_line_and_its_id_back(access_lines, generator):
    middleware = access.AccessLog(_wsgi("404 NOT FOUND", generator=generator))
    answered, content, environ = call(middleware, "/api/x", "token=secret&limit=5", x_request_id="given-1")
    assert content == b"ok" and answered["status"] == "404 NOT FOUND"
    assert [value for name, value in answered["headers"] if name.lower() == "x-request-id"] == ["given-1"]
    assert environ["nexus.request_id"] == "given-1"
    line, = access_lines.objects()
    assert line["event"] == "http_request" and line["level"] == "INFO"
    assert (line["method"], line["path"], line["status"], line["client"], line["requestId"]) == (
        "GET", "/api/x?token&limit", 404, "203.0.113.7", "given-1")
    assert isinstance(line["durationMs"], float) and line["durationMs"] >= 0
    assert "secret" not in access_lines.buffer.getvalue()


def test_an_insane_request_id_is_replaced(access_lines):
    answered, _, _ = call(access.AccessLog(_wsgi()), x_request_id="x" * 500)
    header, = [value for name, value in answered["headers"] if name == "X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", header)
    assert access_lines.objects()[0]["requestId"] == header


def test_long_polling_is_logged_at_debug_and_a_websocket_at_info(access_lines):
    middleware = access.AccessLog(_wsgi(), "socket.io")
    call(middleware, "/socket.io/", "EIO=4&transport=polling&sid=AbCdEfGhIjKlMnOpQrSt")
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/socket.io/", "QUERY_STRING": "EIO=4&transport=websocket",
               "REMOTE_ADDR": "::1", "wsgi.websocket": object()}
    middleware(environ, lambda *args: None)
    polling, upgraded = access_lines.objects()
    assert polling["level"] == "DEBUG" and polling["path"] == "/socket.io/?EIO&transport&sid"
    assert upgraded["level"] == "INFO" and upgraded["status"] == 101
    assert upgraded["path"] == "/socket.io/?EIO&transport"


def test_an_app_that_raises_still_gets_its_line(access_lines):
    def broken(environ, start_response):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        call(access.AccessLog(broken))
    assert access_lines.objects()[0]["status"] == 500


def test_the_app_answers_with_the_request_id(app):
    client = app.test_client()
    given = client.get("/health", headers={"X-Request-ID": "probe-42"})
    assert given.headers["X-Request-ID"] == "probe-42"
    made = client.get("/api/nothing-here")
    assert made.status_code == 404 and re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-ID"])


GREENLET_FAILS = """
from gevent import monkey; monkey.patch_all()
import gevent
from nexus.config import Config
from nexus.logs import configure_logging
configure_logging(Config.from_env({"NEXUS_LOG_JSON": "%s", "NEXUS_INSTANCE_PATH": %r}))
gevent.spawn(lambda: 1 / 0).join()
"""


@pytest.mark.parametrize("as_json", ["1", "0"])
def test_a_greenlets_uncaught_exception_is_one_json_line_where_logs_are_json(tmp_path, as_json):
    result = subprocess.run([sys.executable, "-c", GREENLET_FAILS % (as_json, str(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    if as_json == "1":
        [entry] = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON: one
        assert (entry["event"], entry["logger"], entry["level"], entry["error"]) == (
            "greenlet_failed", "gevent", "ERROR", "ZeroDivisionError")
        assert "ZeroDivisionError" in entry["exception"] and "Traceback" in entry["exception"]
    else:  # readable logs: gevent's own text, as it always was
        assert "ZeroDivisionError" in result.stderr and "Traceback" in result.stderr
