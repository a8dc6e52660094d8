"""Column helpers shared by the models."""
from __future__ import annotations

import time
from datetime import datetime, timezone

from sqlalchemy import DateTime, TypeDecorator


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use nexus.models.utcnow()")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def isoformat(value: datetime | None) -> str | None:
    """ISO 8601 with a Z, as JavaScript's Date#toISOString prints it."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_second_text: tuple[int, str] = (-1, "")


def iso_from_epoch_ms(epoch_ms: int) -> str:
    """`isoformat` of a time given in epoch milliseconds, for the clock a `ping` reports: the
    date and time of the second are formatted once per second, not once per call."""
    global _second_text
    second, millis = divmod(epoch_ms, 1000)
    cached, text = _second_text
    if cached != second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_text = (second, text)
    return f"{text}.{millis:03d}Z"
