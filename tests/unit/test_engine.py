"""db/engine.is_deadlock: only a deadlock victim is retried, never any other failure."""

from __future__ import annotations

import psycopg
import pymysql
import pytest
from sqlalchemy import exc as sa_exc

from servicegroup.db.engine import is_deadlock


def wrapped(orig: BaseException) -> sa_exc.OperationalError:
    return sa_exc.OperationalError("INSERT ...", {}, orig)


@pytest.mark.parametrize(
    ("orig", "expected"),
    [
        (pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock"), True),
        (pymysql.err.OperationalError(1205, "Lock wait timeout exceeded"), False),
        (pymysql.err.OperationalError(2013, "Lost connection to MySQL server"), False),
        (psycopg.errors.DeadlockDetected("deadlock detected"), True),
        (psycopg.errors.LockNotAvailable("could not obtain lock"), False),
        (psycopg.OperationalError("server closed the connection"), False),
    ],
)
def test_is_deadlock(orig: BaseException, expected: bool) -> None:
    assert is_deadlock(wrapped(orig)) is expected


def test_an_error_without_a_driver_error_is_no_deadlock() -> None:
    assert is_deadlock(RuntimeError("x")) is False
