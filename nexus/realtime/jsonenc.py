"""orjson behind the `json` module interface that python-socketio and python-engineio expect."""
from __future__ import annotations

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
    """Decode a JSON document."""
    return orjson.loads(data)


JSONDecodeError = orjson.JSONDecodeError
