"""Logging, configured once by the factory: readable lines in development, JSON lines in production.

Nexus's own lines are events with fields (`log_event`): one JSON object per line whose fields are
fields (`event`, `ns`, `sid`, `user`, `code`, ...) in production, and a readable sentence followed
by key=value in development. A filter on the root handler scrubs tokens (query strings, bearer
headers, bare JWTs) from every record, whichever library wrote it. A client's mistakes (an unknown
session, transport or origin) are counted and logged as warnings at most, never as errors.
"""
from __future__ import annotations

import json
import logging
import re
import string
import sys
import time
from datetime import datetime, timezone
from functools import lru_cache
from threading import Lock
from typing import Any, Callable, Mapping

import orjson

from nexus.config import Config

_SECRET_PATTERNS = (
    (re.compile(r"(?i)([?&](?:token|access_token|refresh_token|jwt|sid)=)[^&\s\"']+"), r"\1[redacted]"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[redacted]"),
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), "[redacted-jwt]"),
)


# An engine.io session id (20 characters of base64url) is a credential: whoever has it can poll
# and post as that connection. Mixed case is required so that ordinary words are left alone.
_SESSION_ID = re.compile(r"(?<![A-Za-z0-9_-])(?=[A-Za-z0-9_-]*[a-z])(?=[A-Za-z0-9_-]*[A-Z])[A-Za-z0-9_-]{20}(?![A-Za-z0-9_-])")
_LINE_BREAKS = str.maketrans({"\r": "\\r", "\n": "\\n"})


def redact(text: str) -> str:
    """Remove token material from a line of text."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Formats the message early and scrubs it, so no argument can smuggle a token out, nor a line
    break forge a log line; the protocol loggers' lines lose their session ids too."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message).translate(_LINE_BREAKS)
        if record.name.startswith(("engineio", "socketio")):
            cleaned = _SESSION_ID.sub("[sid]", cleaned)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


# -- events with fields ------------------------------------------------------------------


class _TextFormatter(string.Formatter):
    """str.format for readable lines: a mapping reads `a=1, b=2`, a list `a, b`."""

    def format_field(self, value: Any, format_spec: str) -> str:
        if not format_spec:
            return _text(value)
        return super().format_field(value, format_spec)


def _text(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{key}={item}" for key, item in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(str(item) for item in value)
    return str(value)


_TEXT = _TextFormatter()


@lru_cache(maxsize=256)
def _named_in(template: str) -> frozenset[str]:
    """The field names a str.format template uses."""
    return frozenset(name for _, name, _, _ in _TEXT.parse(template) if name)


def log_event(logger: logging.Logger | logging.LoggerAdapter, event: str, message: str | None = None, /, *,
              level: int = logging.INFO, exc_info: Any = None, **fields: Any) -> None:
    """Log one `event` with its `fields`.

    JSON lines carry `event` and every field as a field of their own, and `message`: the message
    (a str.format template over the fields; the event's name when not given). Readable lines are
    the message followed by key=value for each field the message does not name, so
    `log_event(log, "connected", ns="/", sid=sid, user="7")` reads `connected ns=/ sid=... user=7`.
    The message must be a constant: the values go in the fields.
    """
    if not logger.isEnabledFor(level):
        return
    phrase = event if message is None else _TEXT.vformat(message, (), fields)
    named = _named_in(message) if message else frozenset()
    rest = " ".join(f"{key}={_text(value)}" for key, value in fields.items() if key not in named)
    text = f"{phrase} {rest}" if rest else phrase
    logger.log(level, text, exc_info=exc_info, stacklevel=2,
               extra={"event": event, "fields": fields, "nexus_phrase": phrase})


def user_label(user_id: Any) -> str:
    """The `user` field of a line: the user's id, or "guest" (a string either way, so that log
    stores see one type)."""
    return "guest" if user_id is None else str(user_id)


# Keys of a JSON line that a field may not take (a field of that name is written as name_).
_LINE_KEYS = frozenset({"time", "level", "logger", "message", "event", "exception", "stack"})


def _field_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_field_value(item) for item in value]
    if isinstance(value, Mapping):
        return {redact(str(key)): _field_value(item) for key, item in value.items()}
    return redact(str(value))


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's event and fields
    (`extra={"fields": {...}}`, or `log_event`) as fields of their own, scrubbed of tokens."""

    def format(self, record: logging.LogRecord) -> str:
        phrase = getattr(record, "nexus_phrase", None)
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(phrase) if isinstance(phrase, str) else record.getMessage(),
        }
        event = getattr(record, "event", None)
        if isinstance(event, str):
            entry["event"] = event
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            for key, value in fields.items():
                name = str(key)
                entry[name + "_" if name in _LINE_KEYS else name] = _field_value(value)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        try:
            return orjson.dumps(entry, default=str).decode()
        except (TypeError, orjson.JSONEncodeError):  # a lone surrogate, say: escaped by json instead
            return json.dumps(entry, default=str, separators=(",", ":"))


class ReadableFormatter(logging.Formatter):
    """Readable lines; tracebacks scrubbed too."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatException(self, ei) -> str:  # noqa: N802 - logging's name
        return redact(super().formatException(ei))


# -- a client's mistakes ----------------------------------------------------------------

#: Seconds between two lines of one kind of client mistake reported by python-engineio.
MISTAKE_LINE_EVERY_S = 60.0
# python-engineio logs the first occurrence of each of these at ERROR level, with this suffix, and
# the later ones at INFO: (kind, how the message starts, how it ends). Its wording is pinned by tests.
_ENGINEIO_ONCE_SUFFIX = " (further occurrences of this error will be logged with level INFO)"
_ENGINEIO_MISTAKES: tuple[tuple[str, str, str], ...] = (
    ("invalid_session", "Invalid session ", ""),
    ("invalid_transport", "Invalid transport", ""),
    ("origin_refused", "", " is not an accepted origin."),
    ("unsupported_version", "The client is using an unsupported version", ""),
    ("invalid_upgrade", "Invalid websocket upgrade", ""),
    ("invalid_jsonp", "Invalid JSONP index number", ""),
    ("not_connected", "Socket for session ", " is not connected"),
    ("unexpected_http", "Unexpected HTTP request for session ", ""),
)
_ENGINEIO_TEMPLATES = {"Method %s not supported": "method_not_allowed"}
_STARTS = tuple(start for _, start, _ in _ENGINEIO_MISTAKES if start)
_ENDS = tuple(end for _, _, end in _ENGINEIO_MISTAKES if end) + (_ENGINEIO_ONCE_SUFFIX,)
# Nexus's own warnings that are a client's mistake: counted (each line stays, and stays a warning).
_NEXUS_MISTAKES = {("nexus.server", "refused a WebSocket from origin %r"): "origin_refused"}


class ClientMistakes:
    """Counts of client mistakes by kind, in this process (exported as nexus_client_errors_total)."""

    def __init__(self, every_s: float = MISTAKE_LINE_EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.every_s = every_s
        self.clock = clock
        self._counts: dict[str, int] = {}
        self._unlogged: dict[str, int] = {}
        self._next_line: dict[str, float] = {}
        self._lock = Lock()

    def count(self, kind: str) -> None:
        """Count one mistake that was logged elsewhere."""
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + 1

    def report(self, logger: logging.Logger, kind: str, message: str) -> None:
        """Count one mistake and log it as a warning, at most once per kind every `every_s` seconds
        (the line says how many went unlogged since the last one)."""
        now = self.clock()
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            if now < self._next_line.get(kind, 0.0):
                self._unlogged[kind] = self._unlogged.get(kind, 0) + 1
                return
            self._next_line[kind] = now + self.every_s
            unlogged = self._unlogged.pop(kind, 0)
        line, fields = "client error {kind}: {detail}", {"kind": kind, "detail": message[:300]}
        if unlogged:  # the mistakes of this kind left out since the last line
            line, fields["unlogged"] = line + " ({unlogged} more since the last line)", unlogged
        log_event(logger, "client_error", line, level=logging.WARNING, **fields)

    def counts(self) -> dict[str, int]:
        """Mistakes by kind since the process started."""
        with self._lock:
            return dict(self._counts)


CLIENT_MISTAKES = ClientMistakes()


def engineio_mistake(message: Any) -> tuple[str, str] | None:
    """(kind, message without engine.io's "further occurrences" note) when python-engineio's
    message is about a client's mistake, else None."""
    if not isinstance(message, str) or not (message.startswith(_STARTS) or message.endswith(_ENDS)):
        return None
    text = message.removesuffix(_ENGINEIO_ONCE_SUFFIX)
    for kind, start, end in _ENGINEIO_MISTAKES:
        if text.startswith(start) and text.endswith(end):
            return kind, text
    return None


class ProtocolLogger(logging.LoggerAdapter):
    """python-engineio's logger: a client's mistakes become counted warnings (one line per kind a
    minute at most); everything else goes to the wrapped logger unchanged."""

    def __init__(self, logger: logging.Logger, mistakes: ClientMistakes = CLIENT_MISTAKES):
        super().__init__(logger, {})
        self.mistakes = mistakes

    def _mistake(self, msg: Any, args: tuple[Any, ...]) -> bool:
        if args:
            # The per-packet lines carry arguments: only a known template is looked at further.
            kind = _ENGINEIO_TEMPLATES.get(msg) if isinstance(msg, str) else None
            if kind is None:
                return False
            self.mistakes.report(self.logger, kind, msg % args)
            return True
        found = engineio_mistake(msg)
        if found is None:
            return False
        self.mistakes.report(self.logger, *found)
        return True

    def error(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        """An error line, unless it reports a client's mistake."""
        if not self._mistake(msg, args):
            self.logger.error(msg, *args, **kwargs)

    def warning(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        """A warning line, unless it reports a client's mistake."""
        if not self._mistake(msg, args):
            self.logger.warning(msg, *args, **kwargs)

    def info(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        """An info line (engine.io's later occurrences of a client's mistake among them)."""
        if not self._mistake(msg, args) and self.logger.isEnabledFor(logging.INFO):
            self.logger.info(msg, *args, **kwargs)


class MistakeCountingFilter(logging.Filter):
    """Counts Nexus's own warning lines that report a client's mistake (by their exact template)."""

    def __init__(self, mistakes: ClientMistakes = CLIENT_MISTAKES):
        super().__init__()
        self.mistakes = mistakes

    def filter(self, record: logging.LogRecord) -> bool:
        """Count the record if it is a known client-mistake line; keep every record."""
        kind = _NEXUS_MISTAKES.get((record.name, record.msg)) if isinstance(record.msg, str) else None
        if kind is not None:
            self.mistakes.count(kind)
        return True


def engineio_logger(name: str = "engineio") -> ProtocolLogger:
    """The logger to give python-engineio."""
    return ProtocolLogger(logging.getLogger(name))


_HANDLER_NAME = "nexus"


def console_handler(json_lines: bool) -> logging.Handler:
    """The handler of Nexus's lines, and of gunicorn's (nexus.gunicorn_conf): standard error, JSON
    lines or readable ones, tokens scrubbed."""
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JSONFormatter() if json_lines else ReadableFormatter())
    handler.addFilter(RedactingFilter())
    return handler


def announce(logger: logging.Logger, event: str, message: str, /, **fields: Any) -> None:
    """An INFO line written whatever LOG_LEVEL is (the start banner): an event with fields, like
    `log_event`'s."""
    phrase = _TEXT.vformat(message, (), fields)
    record = logger.makeRecord(logger.name, logging.INFO, "(announce)", 0, phrase, None, None,
                               extra={"event": event, "fields": fields, "nexus_phrase": phrase})
    logger.handle(record)


def configure_logging(config: Config) -> None:
    """Install one handler on the root logger (idempotent: a second app replaces it)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = console_handler(config.log_json)
    root.addHandler(handler)
    root.setLevel(config.log_level)
    # Python's warnings are log lines too (JSON ones in production), not text on standard error.
    logging.captureWarnings(config.log_json)
    # Protocol chatter only when DEBUG=socketio:* asks for it.
    level = logging.DEBUG if config.protocol_debug else logging.WARNING
    for name in ("socketio", "engineio", "geventwebsocket"):
        logging.getLogger(name).setLevel(level)
    logging.getLogger("nexus.access").setLevel(logging.DEBUG if config.protocol_debug else logging.WARNING)
    for logger_name in {name for name, _ in _NEXUS_MISTAKES}:
        logger = logging.getLogger(logger_name)
        if not any(isinstance(existing, MistakeCountingFilter) for existing in logger.filters):
            logger.addFilter(MistakeCountingFilter())
    route_greenlet_failures(config.log_json)


def route_greenlet_failures(as_log_lines: bool) -> None:
    """gevent writes a greenlet's uncaught exception to standard error as text; where the logs are
    JSON it is one log line instead (logger `gevent`, event `greenlet_failed`, the traceback in
    `exception`). Only in a gevent process (monkey-patched): others have no hub to ask."""
    try:
        from gevent import get_hub, monkey
    except ImportError:
        return
    if not monkey.is_module_patched("socket"):
        return
    hub = get_hub()
    if as_log_lines:
        hub.print_exception = _log_greenlet_failure
    else:
        hub.__dict__.pop("print_exception", None)


def _log_greenlet_failure(context: Any, kind: Any, value: Any, traceback: Any) -> None:
    """Hub.print_exception's replacement: the failure as one log line."""
    try:
        where = repr(context)[:200] if context is not None else None
        log_event(logging.getLogger("gevent"), "greenlet_failed", "{error} in {where}", level=logging.ERROR,
                  exc_info=(kind, value, traceback), error=getattr(kind, "__name__", str(kind)), where=where)
    except Exception:  # logging itself failed: gevent's own text, as before
        sys.__stderr__.write(f"{kind!r}: {value!r} in {context!r}\n")


def configuration_error_line(exc: Any, environ: Mapping[str, str] | None = None) -> str:
    """The one line a process that refuses to start writes: `nexus: configuration error: ...`, as a
    JSON object (event `configuration_error`, `variable`, `problem`) where the logs are JSON
    (NEXUS_LOG_JSON, on by default in production). Written before logging exists, so the
    environment is read here, as leniently as possible: the configuration is what is broken."""
    import os

    env = os.environ if environ is None else environ
    text = f"nexus: configuration error: {exc}"
    wanted = (env.get("NEXUS_LOG_JSON") or "").strip().lower()
    mode = (env.get("NEXUS_ENV") or env.get("NODE_ENV") or "").strip().lower()
    if wanted in ("1", "true", "yes", "on") or (wanted not in ("0", "false", "no", "off") and mode == "production"):
        entry = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "level": "ERROR",
            "logger": "nexus",
            "message": text,
            "event": "configuration_error",
            "variable": getattr(exc, "variable", None),
            "problem": getattr(exc, "problem", str(exc)),
        }
        return json.dumps(entry, ensure_ascii=False)
    return text
