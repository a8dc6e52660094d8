"""Marshmallow schemas shared by REST and socket handlers."""
from __future__ import annotations

import functools
import re
from typing import Any

from marshmallow import Schema, ValidationError

from nexus.errors import NexusError

#: Ids and sequence numbers are 32-bit integer columns: a larger one can name nothing.
MAX_ID = 2**31 - 1


@functools.lru_cache(maxsize=64)
def schema(cls: type[Schema], **options: Any) -> Schema:
    """One instance per schema class and options, reused for every event (building a marshmallow
    schema costs more than loading with it; loading keeps no state in the instance)."""
    return cls(**options)


#: Characters no text column can store: NUL (PostgreSQL refuses it) and UTF-16 surrogates, which
#: only a JSON escape without its pair (\\ud800) can bring and no UTF-8 encoder can write.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_ERROR = "Must not contain NUL or unpaired surrogate characters."


def unstorable(value: Any, where: str = "") -> str | None:
    """Where in `value` (strings, and lists and objects of them, keys included) a string holds a
    character no database can store: "" for `value` itself, else a dotted path; None if nowhere."""
    pending: list[tuple[Any, str]] = [(value, where)]
    while pending:
        node, path = pending.pop()
        if type(node) is str:
            if UNSTORABLE.search(node):
                return path
        elif isinstance(node, dict):
            for key, item in node.items():
                name = str(key)
                if UNSTORABLE.search(name):  # named without the characters it is refused for
                    return f"{path}.{UNSTORABLE.sub('?', name)}" if path else UNSTORABLE.sub("?", name)
                pending.append((item, f"{path}.{name}" if path else name))
        elif isinstance(node, (list, tuple)):
            pending.extend((item, f"{path}.{index}" if path else str(index)) for index, item in enumerate(node))
    return None


def unstorable_refusal(field: str) -> NexusError:
    """The VALIDATION_ERROR for `field` ("" for the payload itself) holding such a string."""
    return NexusError("VALIDATION_ERROR", f"{field}: {UNSTORABLE_ERROR}" if field else UNSTORABLE_ERROR,
                      details={field or "_schema": [UNSTORABLE_ERROR]})


def refuse_unstorable(value: Any, where: str = "") -> None:
    """VALIDATION_ERROR naming the field when `value` holds a string no database can store."""
    path = unstorable(value, where)
    if path is not None:
        raise unstorable_refusal(path)


def load(schema: Schema, data: Any) -> Any:
    """Validate with a schema; bad input becomes a VALIDATION_ERROR carrying the field messages.
    A string no database can store is refused wherever it is, before the schema sees it."""
    refuse_unstorable(data)
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise NexusError("VALIDATION_ERROR", _summary(exc.messages), details=exc.messages) from None


def _summary(messages: Any) -> str:
    if isinstance(messages, dict) and messages:
        name, problem = next(iter(messages.items()))
        while isinstance(problem, (list, dict)) and problem:
            problem = problem[0] if isinstance(problem, list) else next(iter(problem.values()))
        if name == "_schema":
            return str(problem)
        return f"{name}: {problem}"
    if isinstance(messages, list) and messages:
        return str(messages[0])
    return "The request is not valid."
