"""Marshmallow schemas shared by REST and socket handlers."""
from __future__ import annotations

import functools
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


def load(schema: Schema, data: Any) -> Any:
    """Validate with a schema; bad input becomes a VALIDATION_ERROR carrying the field messages."""
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
