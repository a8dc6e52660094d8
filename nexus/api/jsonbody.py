"""Request bodies in JSON for every blueprint: decoded with the standard library, nested at most
MAX_JSON_DEPTH levels, and a body nested deeper answered 400 VALIDATION_ERROR instead of
exhausting the decoder's recursion; likewise a body with a string no database can store (NUL, an
unpaired surrogate), instead of a database error."""
from __future__ import annotations

import json
import re
from typing import Any

from flask.json.provider import DefaultJSONProvider

from nexus.errors import NexusError
from nexus.schemas import refuse_unstorable

#: Arrays and objects inside one another, counting the outermost one. Nexus's bodies need three or four.
MAX_JSON_DEPTH = 32

#: The escapes that alone bring NUL or a surrogate into a decoded string (strict JSON has no raw
#: control characters in strings, and a body that is not UTF-8 is not decoded): where none is
#: present, the body costs no walk.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_SUSPECT_ESCAPE_BYTES = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


class BoundedJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider with a depth bound on what requests send."""

    max_depth = MAX_JSON_DEPTH

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Decode a document; VALIDATION_ERROR when it nests deeper than the bound."""
        if kwargs:
            # Flask's own callers (the signed session cookie, with an object_hook) decode data it wrote.
            return super().loads(s, **kwargs)
        try:
            value = json.loads(s)
        except RecursionError:
            raise too_deep(self.max_depth) from None
        # A document with fewer brackets than the bound cannot nest deeper: the usual body costs no walk.
        brackets = s.count(b"[" if isinstance(s, bytes) else "[") + s.count(b"{" if isinstance(s, bytes) else "{")
        if brackets > self.max_depth and nesting_exceeds(value, self.max_depth):
            raise too_deep(self.max_depth)
        if (_SUSPECT_ESCAPE_BYTES if isinstance(s, bytes) else _SUSPECT_ESCAPE).search(s):
            refuse_unstorable(value)
        return value


def too_deep(limit: int) -> NexusError:
    """The answer to a body nested deeper than `limit`."""
    return NexusError("VALIDATION_ERROR", f"The JSON body is nested too deeply (at most {limit} levels).",
                      details={"maxDepth": limit})


def nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether arrays and objects in `value` nest more than `limit` levels (walked without recursion)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False
