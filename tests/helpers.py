"""Small helpers shared by the tests: polling with a deadline, and a fake record."""

from __future__ import annotations

import time
import uuid as uuid_mod
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from servicegroup.clock import Clock
from servicegroup.service import Service

T = TypeVar("T")

PATIENCE = 15.0  # a hang guard for polling, never a performance bound


def wait_for(
    predicate: Callable[[], T],
    what: str = "the condition",
    patience: float = PATIENCE,
    every: float = 0.02,
) -> T:
    """Poll until `predicate` returns something truthy, and return it."""
    deadline = time.monotonic() + patience
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {patience}s waiting for {what}")
        time.sleep(every)


def make_service(**fields: Any) -> Service:
    """A Service record for unit tests that need no database; override any field."""
    values: dict[str, Any] = {
        "uuid": str(uuid_mod.uuid4()),
        "host": "compute-1",
        "binary": "nova-compute",
        "topic": None,
        "availability_zone": None,
        "version": 0,
        "report_count": 0,
        "disabled": False,
        "disabled_reason": None,
        "forced_down": False,
        "last_seen_up": None,
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "updated_at": None,
        "deleted": False,
        "deleted_at": None,
    }
    values.update(fields)
    return Service(**values)


class ManualClock(Clock):
    """Time moves only when the test says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def monotonic(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


# A stored time, and every field of a Service in order, for the unit tests of
# the values a read builds (test_service, test_records, test_api, test_drivers_db).
AT = datetime(2026, 11, 24, 6, 22, 18, 123456, tzinfo=UTC)
VALUES = ("u", "h", "b", None, "az", 3, 7, False, None, True, AT, AT, None, False, None, "up")
