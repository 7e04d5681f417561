"""drivers/db.py: a Pulse is reused only for the very same beat."""

from __future__ import annotations

from datetime import timedelta

from servicegroup.clock import SYSTEM_CLOCK
from servicegroup.db.engine import make_engine
from servicegroup.db.records import RecordSet
from servicegroup.drivers.base import Pulse
from servicegroup.drivers.db import DbDriver
from servicegroup.service import new_service
from tests.helpers import AT, VALUES


def test_db_driver_reuses_a_pulse_only_for_the_same_beat() -> None:
    driver = DbDriver(None, make_engine("sqlite://"), SYSTEM_CLOCK)  # read() needs no config
    beating, silent = new_service(*VALUES), new_service("v", *VALUES[1:10], None, *VALUES[11:])
    first = driver.read(RecordSet([beating, silent], AT)).pulses
    assert first == {"u": Pulse(AT)}
    assert driver.read(RecordSet([beating, silent], AT)).pulses["u"] is first["u"]
    later = new_service(*VALUES[:10], AT + timedelta(seconds=1), *VALUES[11:])
    assert driver.read(RecordSet([later], AT)).pulses == {"u": Pulse(AT + timedelta(seconds=1))}
