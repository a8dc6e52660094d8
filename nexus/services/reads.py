"""Reads outside the request's session: one pooled connection in autocommit, for the few statements
a new connection needs (its token's account, its unread counts and notifications).

A read through the session opens a transaction (BEGIN) and ends it when the connection goes back to
the pool (ROLLBACK): two round trips around every statement. In autocommit each statement is its
own snapshot and nothing is left to end, so a connection costs its checkout and its statements
only; and the connection goes back as soon as the reads are done, whatever the caller does next.
Only for reads that need no snapshot shared between statements.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from sqlalchemy.engine import Connection

from nexus.extensions import db


@contextlib.contextmanager
def autocommit() -> Iterator[Connection]:
    """A pooled connection in autocommit for the block, returned to the pool at its end."""
    with db.engine.connect() as connection:
        yield connection.execution_options(isolation_level="AUTOCOMMIT")
