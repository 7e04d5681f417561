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

from servicegroup.clock import SYSTEM_CLOCK, Clock
from servicegroup.exceptions import BackendError
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

    def close(self) -> None: ...


class HttpTransport:
    """Through the daemon, with its bearer token."""

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

    def close(self) -> None:
        self.group.close()


# -- the loop ----------------------------------------------------------------------


class Agent:
    """Register, then check and beat every `interval` until `stop` is set."""

    def __init__(
        self,
        transport: Transport,
        identity: dict[str, Any],
        check: Check,
        interval: float,
        leave_on_failure: bool = False,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.transport = transport
        self.identity = identity
        self.check = check
        self.interval = interval
        self.leave_on_failure = leave_on_failure
        self.clock = clock
        self.stop = threading.Event()

    def run(self) -> int:
        """0 after a requested stop; errors other than outages propagate (bad token, input)."""
        service = self._register()
        if service is None:
            return 0
        LOG.info(
            "agent for %s on %s (%s) started; checking every %gs",
            service.binary,
            service.host,
            service.uuid,
            self.interval,
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
        failing = False
        for _ in self._ticks():
            try:
                service = self.transport.register(**self.identity)
            except BackendError as exc:
                if not failing:
                    LOG.warning("cannot register yet: %s; retrying every %gs", exc, self.interval)
                failing = True
                continue
            if failing:
                LOG.info("registered after %s came back", self.transport.backend)
            return service
        return None

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


@contextmanager
def stop_on_signals(agent: Agent) -> Iterator[None]:
    """SIGTERM and SIGINT ask the loop to leave and return, instead of killing it."""

    def handler(_sig: int, _frame: object) -> None:
        agent.stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
