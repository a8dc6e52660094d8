"""Logging, configured once by the factory: readable lines in development, JSON lines in production.

A filter on the root handler scrubs tokens (query strings, bearer headers, bare JWTs) from
every record, whichever library wrote it. A client's mistakes (an unknown session, transport or
origin) are counted and logged as warnings at most, never as errors.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
from datetime import datetime, timezone
from threading import Lock
from typing import Any, Callable

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


class JSONFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


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
        more = f" ({unlogged} more since the last line)" if unlogged else ""
        logger.warning("client error %s: %s%s", kind, message[:300], more)

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


def configure_logging(config: Config) -> None:
    """Install one handler on the root logger (idempotent: a second app replaces it)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JSONFormatter() if config.log_json else ReadableFormatter())
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(config.log_level)
    # Protocol chatter only when DEBUG=socketio:* asks for it.
    level = logging.DEBUG if config.protocol_debug else logging.WARNING
    for name in ("socketio", "engineio", "geventwebsocket"):
        logging.getLogger(name).setLevel(level)
    logging.getLogger("nexus.access").setLevel(logging.DEBUG if config.protocol_debug else logging.WARNING)
    for logger_name in {name for name, _ in _NEXUS_MISTAKES}:
        logger = logging.getLogger(logger_name)
        if not any(isinstance(existing, MistakeCountingFilter) for existing in logger.filters):
            logger.addFilter(MistakeCountingFilter())
