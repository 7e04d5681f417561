"""service.py: fast_new builds real frozen values, the same as the slow constructor."""

from __future__ import annotations

import dataclasses

import pytest

from servicegroup.drivers.base import Pulse, new_pulse
from servicegroup.service import Service, ServiceStatus, State, new_service, new_status
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
