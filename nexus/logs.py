"""Logging, configured once by the factory: readable lines in development, JSON lines in production.

A filter on the root handler scrubs tokens (query strings, bearer headers, bare JWTs) from
every record, whichever library wrote it.
"""
from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone

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
