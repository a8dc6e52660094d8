"""orjson behind the `json` module interface that python-socketio and python-engineio expect."""
from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS


def _fallback(value: Any) -> Any:
    # Sets, tuples-in-keys and objects with a wire form; anything else is a bug worth seeing.
    if isinstance(value, (set, frozenset)):
        return list(value)
    to_wire = getattr(value, "to_wire", None)
    if callable(to_wire):
        return to_wire()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(obj: Any, **_ignored: Any) -> str:
    """Encode to a str; keyword arguments of json.dumps (separators, ...) are not needed."""
    return orjson.dumps(obj, default=_fallback, option=_OPTIONS).decode()


def loads(data: str | bytes, **_ignored: Any) -> Any:
    """Decode a JSON document. One that escapes half of a UTF-16 surrogate pair ("\\ud83d", what
    JavaScript's JSON.stringify writes for a string cut inside an emoji) is valid JSON that orjson
    refuses: the standard library decodes it, and the event's validation refuses the string with
    VALIDATION_ERROR (nexus.schemas.load) instead of the connection being closed as malformed."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "surrogate" not in str(exc):
            raise
        return json.loads(data)


JSONDecodeError = orjson.JSONDecodeError
