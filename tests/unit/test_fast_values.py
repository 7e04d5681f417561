"""The fast paths a bulk read takes build the same values as the slow ones."""

from __future__ import annotations

import dataclasses
import gc
from datetime import UTC, datetime, timedelta, timezone

import pytest

from servicegroup import gcpause
from servicegroup.db.records import _utc, to_service
from servicegroup.drivers.base import Pulse, new_pulse
from servicegroup.service import Service, ServiceStatus, State, new_service, new_status

AT = datetime(2026, 11, 24, 6, 22, 18, 123456, tzinfo=UTC)
VALUES = ("u", "h", "b", None, "az", 3, 7, False, None, True, AT, AT, None, False, None, "up")


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
    "stored",
    [
        "2026-11-24 06:22:18.123456",  # SQLite, SQLAlchemy's storage format
        "2026-11-24 06:22:18.123",  # SQLite, server_now()'s strftime %f
        AT.replace(tzinfo=None),  # psycopg / PyMySQL: naive UTC
        AT.astimezone(timezone(timedelta(hours=2))),  # an aware one, any zone
    ],
)
def test_stored_timestamps_become_aware_utc(stored: object) -> None:
    value = _utc(stored)
    assert value is not None and value.utcoffset() == timedelta(0)
    assert abs(value - AT) < timedelta(milliseconds=1)
    assert _utc(None) is None


def test_to_service_from_a_raw_sqlite_row() -> None:
    # id, uuid, host, binary, topic, az, version, report_count, disabled,
    # disabled_reason, forced_down, last_seen_up, created_at, updated_at,
    # deleted_at, deleted, observed_state, observed_at, db_now
    text = "2026-11-24 06:22:18.123456"
    row = (1, "u", "h", "b", None, "az", 3, 7, 0, None, 1, text, text, None, None, 0, "up", text)
    assert to_service(row) == Service(*VALUES)


def test_gc_pause_nests_and_restores() -> None:
    assert gc.isenabled()
    with gcpause.paused():
        assert not gc.isenabled()
        with gcpause.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gcpause.paused():
            pass
        assert not gc.isenabled()  # someone else turned it off: left off
    finally:
        gc.enable()
