"""service.py: fast_new builds the same frozen values as the slow constructor; times in UTC."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from servicegroup.drivers.base import Pulse, new_pulse
from servicegroup.service import (
    Service,
    ServiceStatus,
    State,
    new_service,
    new_status,
    rfc3339,
)
from tests.helpers import AT, VALUES


def test_new_service_is_a_real_frozen_service() -> None:
    fast, slow = new_service(*VALUES), Service(*VALUES)
    assert type(fast) is Service
    assert fast == slow and hash(fast) == hash(slow)
    assert dataclasses.asdict(fast) == dataclasses.asdict(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.host = "other"  # type: ignore[misc]
    status = new_status(fast, State.UP, AT)
    assert type(status) is ServiceStatus and status == ServiceStatus(slow, State.UP, AT)
    assert status.is_up and status.as_dict() == ServiceStatus(slow, State.UP, AT).as_dict()


def test_new_pulse_keeps_the_default() -> None:
    assert new_pulse(AT) == Pulse(AT) and new_pulse(AT).known is True
    assert new_pulse(None, False) == Pulse(None, known=False)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2026, 1, 1, 12, 0, 0, 5, tzinfo=UTC), "2026-01-01T12:00:00.000005Z"),
        (datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(0))), "2026-01-01T12:00:00.000000Z"),
        # Another zone: the same instant in UTC, not its wall clock labelled "Z".
        (
            datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=2))),
            "2025-12-31T22:30:00.000000Z",
        ),
        (datetime(2026, 1, 1, 12), "2026-01-01T12:00:00.000000Z"),  # naive: taken as UTC
        (None, None),
    ],
)
def test_rfc3339_writes_every_time_in_utc(value: datetime | None, text: str | None) -> None:
    assert rfc3339(value) == text
