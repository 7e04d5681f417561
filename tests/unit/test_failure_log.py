"""FailureLog: one warning per run of failures, one info line when it ends."""

from __future__ import annotations

import logging

import pytest

from servicegroup.failure_log import FailureLog

LOGGER = "tests.failure_log"


def test_a_run_of_failures_is_said_once_and_its_end_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    failures = FailureLog(logging.getLogger(LOGGER), "cannot read: %s", "reading %s again")
    failures.ended("db")  # nothing failed yet: nothing to say
    for attempt in range(3):
        failures.failed(f"refused {attempt}")
    assert failures.failing
    failures.ended("db")
    failures.ended("db")
    failures.failed("gone")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "cannot read: refused 0"),
        ("INFO", "reading db again"),
        ("WARNING", "cannot read: gone"),
    ]


def test_no_recovery_message_says_nothing_at_the_end(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    failures = FailureLog(logging.getLogger(LOGGER), "cannot read events: %s")
    failures.failed("refused")
    failures.ended()
    assert not failures.failing
    assert [r.getMessage() for r in caplog.records] == ["cannot read events: refused"]
