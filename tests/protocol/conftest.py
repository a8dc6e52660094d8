"""Fixtures shared by the protocol modules that attack a server of their own (`server` fixture)."""
from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from tests.security.attack import Control


@pytest.fixture
def control(server: Any) -> Iterator[Control]:
    """A control client on the module's server, connected before the attack."""
    made = Control(server)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def log_after(server: Any) -> Callable[[], str]:
    """The server's log written after this point."""
    start = len(server.log())
    return lambda: server.log()[start:]
