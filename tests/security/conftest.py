"""Fixtures of the security suite.

Each module defines a `server` fixture (usually module-scoped: one process shared by tests that do
not interfere). `control` and `log_after` (tests/conftest.py) work on that server.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from tests.security.attack import Probe, unique_name
from tests.support.cluster import Client


@pytest.fixture
def probes() -> Iterator[Callable[..., Probe]]:
    """Make python-socketio probes (namespace as argument); all closed at teardown."""
    made: list[Probe] = []

    def make(namespace: str = "/") -> Probe:
        made.append(Probe(namespace))
        return made[-1]

    yield make
    for probe in made:
        with contextlib.suppress(Exception):
            probe.close()


@pytest.fixture
def connect_user(server, clients) -> Callable[..., Client]:
    """A new user on the module's server, connected over WebSocket (a recording Client; `.user` is
    the seeded account, `.token` its access token)."""

    def make(prefix: str = "user", **fields) -> Client:
        name = unique_name(prefix)
        account = server.seeder.user(name, **fields)
        token = server.seeder.token(name)
        client = clients(name, server, token)
        client.user, client.token = account, token
        return client

    return make
