"""Fault points: places where a fault-injection test makes this process die on purpose.

A test arms a point with NEXUS_FAULT_POINTS=point:prefix (refused in production); the point
fires for the first event whose key starts with the prefix, so the test chooses which message
the process dies on, and the crash lands at exactly that place every time.
"""
from __future__ import annotations

import logging
import os
import signal
from typing import Iterable

log = logging.getLogger("nexus.faults")

_armed: dict[str, str] = {}


def arm(points: dict[str, str]) -> None:
    """Arm these points (empty: none) for this process."""
    _armed.clear()
    _armed.update(points)
    for point, prefix in points.items():
        log.warning("fault point %s is armed: this process kills itself at it for keys starting %r", point, prefix)


def hit(point: str, keys: Iterable[str | None]) -> None:
    """Die here (SIGKILL, no clean-up of any kind) if the point is armed and a key matches."""
    prefix = _armed.get(point)
    if prefix is None:
        return
    for key in keys:
        if key and key.startswith(prefix):
            log.critical("fault point %s reached for %r: killing this process", point, key)
            for handler in logging.getLogger().handlers:
                handler.flush()
            os.kill(os.getpid(), signal.SIGKILL)
