"""The local clock, injectable.

Liveness is judged with the clock of the store that holds the heartbeat (see
DESIGN.md); the local clock is only used where a backend has no clock of its
own (memcached) and for pacing. Tests swap it to prove that skew cannot flip a
state, and to run intervals without sleeping.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import overload


class Clock:
    """Wall time in UTC plus a monotonic clock for measuring intervals."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class SkewedClock(Clock):
    """A clock that runs `offset` seconds off the real one, as a badly synced host does."""

    def __init__(self, offset: float) -> None:
        self.offset = timedelta(seconds=offset)

    def now(self) -> datetime:
        return super().now() + self.offset


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: datetime | None) -> datetime | None: ...


def as_utc(value: datetime | None) -> datetime | None:
    """Attach UTC to the naive datetimes SQL drivers return (we store UTC only)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


SYSTEM_CLOCK = Clock()
