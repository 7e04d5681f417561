"""`servicegroup agent`: heartbeat on behalf of a service written in any language.

The agent registers the service, then every interval runs a check (a
command, a pidfile, an HTTP URL) and heartbeats only while it passes. A
failing check stops the beats, so the service goes down after
service_down_time, or at once with leave_on_failure; a passing one resumes
them. SIGTERM/SIGINT make the service leave (down at once) and exit 0.

The loop is written once over a Transport: the daemon over HTTP
(client.py), or the database and liveness driver directly (ServiceGroup).
Beats go through Reporter.beat_once(), so an outage of the daemon or the
backend is logged exactly as for join(): one warning, one recovery line.

Without --interval the agent beats at its binary's report_interval, as
join() would: a binary given 2 s of report_interval and 6 s of down time
would be down between the default's 10 s beats. The daemon says what it
is (GET /v1/binaries/{binary}/times), or the configuration does when the
agent goes straight to the backend; it is asked at each registration.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from servicegroup.binary_times import Times, flaps
from servicegroup.clock import SYSTEM_CLOCK, Clock
from servicegroup.exceptions import BackendError, NotFound
from servicegroup.failure_log import FailureLog
from servicegroup.reporter import Reporter
from servicegroup.service import Service

if TYPE_CHECKING:
    from servicegroup.api import ServiceGroup

LOG = logging.getLogger(__name__)

DEFAULT_CHECK_TIMEOUT = 5.0


# -- checks ------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str


Check = Callable[[], Outcome]


def check_command(argv: list[str], timeout: float) -> Outcome:
    """Passes when the command exits 0 within `timeout`; no shell is involved."""
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Outcome(False, f"{shlex.join(argv)} did not finish within {timeout:g}s")
    except OSError as exc:
        return Outcome(False, f"cannot run {shlex.join(argv)}: {exc}")
    if done.returncode == 0:
        return Outcome(True, f"{shlex.join(argv)} exited 0")
    tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
    said = f": {tail[0][:200]}" if tail else ""
    return Outcome(False, f"{shlex.join(argv)} exited {done.returncode}{said}")


def check_pidfile(path: str) -> Outcome:
    """Passes while the process whose pid is in `path` exists.

    A missing, empty or garbled pidfile fails: the agent cannot tell the
    service is alive. A pid owned by another user (EPERM) exists, so passes.
    """
    try:
        with open(path, encoding="ascii") as file:
            text = file.read(64).strip()
    except (OSError, UnicodeDecodeError) as exc:
        return Outcome(False, f"cannot read pidfile {path}: {exc.__class__.__name__}")
    if not text.isdigit() or int(text) <= 0:
        return Outcome(False, f"pidfile {path} does not hold a pid")
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return Outcome(False, f"process {pid} from {path} is not running")
    except PermissionError:
        pass
    except OverflowError:
        return Outcome(False, f"pidfile {path} does not hold a pid")
    return Outcome(True, f"process {pid} is running")


def check_http(url: str, timeout: float) -> Outcome:
    """Passes when a GET of `url` answers 2xx within `timeout` (redirects are not followed)."""
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return Outcome(False, f"GET {url}: {exc.__class__.__name__}: {exc}")
    if response.is_success:
        return Outcome(True, f"GET {url} answered {response.status_code}")
    return Outcome(False, f"GET {url} answered {response.status_code}")


# -- transports --------------------------------------------------------------------


class Transport(Protocol):
    """How the agent reaches servicegroup: register once, then beat and leave."""

    backend: str

    def register(self, **identity: Any) -> Service: ...

    def heartbeat(self, service: Service) -> None: ...

    def leave(self, service: Service) -> None: ...

    def times(self, binary: str) -> Times | None:
        """The binary's report_interval and down time; None when the backend cannot tell."""
        ...

    def close(self) -> None: ...


class HttpTransport:
    """Through the daemon, with the client's token or Keystone session."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.backend = f"the servicegroup daemon at {client.base_url}"

    def register(self, **identity: Any) -> Service:
        service: Service = self.client.register(**identity)
        return service

    def heartbeat(self, service: Service) -> None:
        self.client.heartbeat(service.uuid)

    def leave(self, service: Service) -> None:
        self.client.leave(service.uuid)

    def times(self, binary: str) -> Times | None:
        try:
            times: Times = self.client.times_of(binary)
        except NotFound:  # a daemon older than GET /v1/binaries/{binary}/times
            return None
        return times

    def close(self) -> None:
        self.client.close()


class DirectTransport:
    """Straight to the records database and the liveness driver, as the daemon does."""

    def __init__(self, group: ServiceGroup) -> None:
        self.group = group
        self.backend = group.driver.backend

    def register(self, **identity: Any) -> Service:
        return self.group.register(**identity)

    def heartbeat(self, service: Service) -> None:
        self.group.heartbeat(service)

    def leave(self, service: Service) -> None:
        self.group.leave(service)

    def times(self, binary: str) -> Times | None:
        return self.group.times_of(binary)

    def close(self) -> None:
        self.group.close()


# -- how often ---------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """The agent's period, and what its log says of where it came from."""

    seconds: float
    source: str
    # An explicit --interval too slow for the binary's down time; logged once.
    warning: str | None = None
    # The backend could not tell the binary's times (an older daemon).
    fallback: bool = False


def choose_interval(explicit: float | None, times: Times | None, default: float) -> Interval:
    """--interval if given, else the binary's report_interval, else `default`.

    An explicit interval wins even when its binary's down time is too short
    for it (down time <= 2 x interval: one late beat and the service is
    down): the operator may know why, but is told.
    """
    if explicit is not None:
        warning = None
        if times is not None and flaps(times.service_down_time, explicit):
            warning = (
                f"--interval {explicit:g}s is too slow for binary {times.binary!r}: its "
                f"service_down_time ({times.service_down_time:g}s) must be greater than 2 x "
                "the interval, or one late heartbeat takes the service down; its "
                f"report_interval is {times.report_interval:g}s"
            )
        return Interval(explicit, "--interval", warning)
    if times is None:
        return Interval(default, "the default report_interval", fallback=True)
    return Interval(times.report_interval, f"the report_interval of binary {times.binary!r}")


# -- the loop ----------------------------------------------------------------------


class Agent:
    """Register, then check and beat every `interval` until `stop` is set.

    `interval` is chosen at each registration (choose_interval), after the
    backend has told the binary's times.
    """

    def __init__(
        self,
        transport: Transport,
        identity: dict[str, Any],
        check: Check,
        interval: float | None,
        leave_on_failure: bool = False,
        clock: Clock = SYSTEM_CLOCK,
        *,
        default_interval: float,
    ) -> None:
        """`interval` None: the binary's report_interval, else `default_interval`."""
        self.transport = transport
        self.identity = identity
        self.check = check
        self.explicit_interval = interval
        self.default_interval = default_interval
        # Until the backend tells the binary's (registration retries wait this long).
        self.interval = default_interval if interval is None else interval
        self.leave_on_failure = leave_on_failure
        self.clock = clock
        self.stop = threading.Event()
        self.interval_source = "the default report_interval" if interval is None else "--interval"
        # Each said once, however often the agent registers.
        self._warned_too_slow = self._told_fallback = False

    def run(self) -> int:
        """0 after a requested stop; errors other than outages propagate (bad token, input)."""
        service = self._register()
        if service is None:
            return 0
        LOG.info(
            "agent for %s on %s (%s) started; checking every %gs (%s)",
            service.binary,
            service.host,
            service.uuid,
            self.interval,
            self.interval_source,
        )
        reporter = Reporter(
            service, self.transport.heartbeat, self.interval, self.transport.backend, self.clock
        )
        passing = True
        for _ in self._ticks():
            outcome = self.check()
            if outcome.ok:
                if not passing:
                    LOG.info("check passing again (%s); heartbeats resume", outcome.detail)
                reporter.beat_once()
            elif passing:
                LOG.warning("check failing (%s); heartbeats stop", outcome.detail)
                if self.leave_on_failure:
                    self._leave(service, "check failing")
            passing = outcome.ok
        self._leave(service, "stopping")
        return 0

    def _register(self) -> Service | None:
        """Retry through outages (the daemon may start after us); None if stopped first."""
        failures = FailureLog(
            LOG, "cannot register yet: %s; retrying every %gs", "registered after %s came back"
        )
        for _ in self._ticks():
            try:
                service = self.transport.register(**self.identity)
                times = self.transport.times(service.binary)
            except BackendError as exc:
                failures.failed(exc, self.interval)
                continue
            failures.ended(self.transport.backend)
            self._use(choose_interval(self.explicit_interval, times, self.default_interval))
            return service
        return None

    def _use(self, chosen: Interval) -> None:
        """Beat at `chosen` from now on; its warning, or the fallback, is logged once."""
        self.interval, self.interval_source = chosen.seconds, chosen.source
        if chosen.warning is not None and not self._warned_too_slow:
            self._warned_too_slow = True
            LOG.warning("%s", chosen.warning)
        if chosen.fallback and not self._told_fallback:
            self._told_fallback = True
            LOG.warning(
                "%s does not tell binaries' times (older than GET /v1/binaries/{binary}/times): "
                "beating every %gs, the default report_interval; pass --interval to choose",
                self.transport.backend,
                chosen.seconds,
            )

    def _leave(self, service: Service, why: str) -> None:
        try:
            self.transport.leave(service)
        except BackendError as exc:
            LOG.warning(
                "%s: could not leave (%s); the service goes down after service_down_time",
                why,
                exc,
            )
        else:
            LOG.info("%s: %s on %s left (down now)", why, service.binary, service.host)

    def _ticks(self) -> Iterator[None]:
        """Fixed-rate ticks on the monotonic clock until stopped; no catch-up bursts."""
        next_at = self.clock.monotonic()
        while not self.stop.is_set():
            yield
            next_at += self.interval
            now = self.clock.monotonic()
            next_at = max(next_at, now)
            if self.stop.wait(next_at - now):
                return


class Stoppable(Protocol):
    """A loop that returns once its `stop` is set: the Agent, keystone-token --renew."""

    stop: threading.Event


@contextmanager
def stop_on_signals(loop: Stoppable) -> Iterator[None]:
    """SIGTERM and SIGINT ask the loop to finish and return, instead of killing it."""

    def handler(_sig: int, _frame: object) -> None:
        loop.stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
