"""The sweep: the leader's loop that turns liveness into up/down events.

Every daemon runs a Sweeper; only the one holding the "sweeper" lease
(leader/lease.py) sweeps, and renews the lease between sweeps as well as at
each one. Each sweep it renews the lease, reads the status
of every service that can have changed (leader/schedule.py: after a full
read, only the up services due to expire, those not up, and those new
events name; every full_sweep_interval, all of them, in slices of one
SELECT and one liveness read each), decides what changed (leader/decision.py,
pure) and writes each change as a compare-and-set on services.observed_state
plus an appended event, in a transaction that confirms the lease. So:

- two sweepers never duplicate an event: the CAS from the old state succeeds
  once; a deposed leader's confirm fails and it writes nothing;
- a new leader loses nothing: it starts from observed_state in SQL, so a
  service that died during the hand-over is still "up" there and its down
  event is written by whoever sweeps next.

Notifications on the message bus (leader/notifier.py) follow the stream on
a thread of their own while this daemon leads; the sweep only wakes it.

After the events, the same sweep feeds the event hooks (leader/hooks.py),
runs the claims recovery pass (leader/recovery.py) and prunes old events.
Admin actions are not the sweeper's business: db/records.py appends them in
the same transaction as the record change, from whichever process makes it.

Usage::

    sweeper = Sweeper(sg, conf).start()   # sg: anything that is a Fleet
    ...
    sweeper.stop()
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
import uuid as uuid_mod
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from oslo_config import cfg
from sqlalchemy import Engine

from servicegroup.backend_errors import sql_errors
from servicegroup.binary_times import BinaryTimes
from servicegroup.clock import SYSTEM_CLOCK, Clock
from servicegroup.db import event_log
from servicegroup.db.engine import writing
from servicegroup.exceptions import BackendError
from servicegroup.failure_log import FailureLog
from servicegroup.leader import lease
from servicegroup.leader.decision import SWEEP_CAUSES, MassDown, Transition, decide
from servicegroup.leader.hooks import EventHooks
from servicegroup.leader.notifier import notifier_from_conf
from servicegroup.leader.recovery import Recovery
from servicegroup.leader.schedule import ReadSchedule
from servicegroup.service import ServiceStatus, Snapshot, State

LOG = logging.getLogger(__name__)

# How long after a heartbeat's computed expiry the sweeper looks: stored
# times are rounded (SQLite keeps milliseconds), and at the exact instant
# judge() still says up.
EXPIRY_MARGIN = 0.01
PRUNE_EVERY = 60.0  # seconds between two prunes by the leader
# Services not up (or named by new events) read per sweep at most, in
# sweep_slices (leader/schedule.py due()): a cold start of 100,000
# registrations would otherwise make every sweep read all of them, and its
# tail hold the API's requests.
WATCH_SLICES = 5
# Transitions a sweep logs one line each; past that, one line per kind. A
# fleet's cold start writes 100,000 up events, and 100,000 log lines cost the
# sweep a fifth of its time and tell an operator less than the count does (the
# event stream has every one).
LOG_EACH = 20


class LeaseLost(Exception):
    """Raised between the slices of a read when the lease could not be renewed."""


class Fleet(Protocol):
    """What the sweeper needs of the fleet: ServiceGroup is one."""

    @property
    def engine(self) -> Engine: ...

    @property
    def times(self) -> BinaryTimes: ...

    @property
    def beat_times(self) -> bool: ...

    def slices(self, size: int) -> Iterator[Snapshot]: ...

    def snapshot_of(self, uuids: Collection[str]) -> Snapshot: ...


def write_transitions(
    engine: Engine, transitions: Sequence[Transition], hold: lease.Hold
) -> list[Transition] | None:
    """Write transitions as CAS + events under the lease; None if we no longer lead.

    A CAS that misses means another writer (an admin action, another
    sweeper) changed observed_state since our snapshot: that transition is
    dropped, and the next sweep decides again from what SQL now says.
    """
    with sql_errors(), writing(engine) as conn:
        if not hold.confirm(conn):
            return None
        event_log.lock_sequence(conn)
        changed = event_log.set_observed_many(
            conn, [(t.status.service.uuid, t.previous, t.state) for t in transitions]
        )
        done = [t for t in transitions if t.status.service.uuid in changed]
        event_log.append(conn, [t.draft() for t in done if t.previous is not None])
    return [t for t in done if t.previous is not None]


def log_transitions(written: Sequence[Transition]) -> None:
    """One line per transition, or per (binary, from, to, cause) when a sweep wrote many."""
    if len(written) <= LOG_EACH:
        for t in written:
            svc = t.status.service
            LOG.info("%s on %s: %s -> %s (%s)", svc.binary, svc.host, t.previous, t.state, t.cause)
        return
    kinds = Counter((t.status.service.binary, t.previous, t.state, t.cause) for t in written)
    for (binary, previous, state, cause), count in sorted(kinds.items(), key=str):
        LOG.info("%d %s services: %s -> %s (%s)", count, binary, previous, state, cause)


def seconds_to_expiry(
    snapshot: Snapshot, down_time: float, by_binary: Mapping[str, float] | None = None
) -> float | None:
    """Seconds after the read until its first up service is down, if that one never beats again.

    The sweeper sleeps until then rather than a whole sweep_interval, so a
    death is reported as it happens, not up to an interval later. It leaves
    out judge()'s outage excuse, which can only make the answer early: an
    early sweep finds the service still up and asks again. None: no up
    service has a heartbeat to expire. `by_binary`: the binaries with their
    own down time ([binaries]), whose services expire by it.
    """
    read_at = snapshot.read_at
    if read_at is None:
        return None
    up, own = State.UP, by_binary or {}
    expiries = [
        (s.last_heartbeat - read_at).total_seconds() + own.get(s.service.binary, down_time)
        for s in snapshot.statuses
        if s.state is up and s.last_heartbeat
    ]
    return min(expiries) if expiries else None


def next_sweep(
    started: float,
    interval: float,
    expires_at: float | None,
    took: float = 0.0,
    budget: float = 1.0,
    down_time: float = float("inf"),
) -> float:
    """When to sweep next: a period on, or sooner when an up service expires sooner.

    The period is sweep_interval, stretched to took / budget (`took`: the
    sweep thread's CPU seconds) when sweeps are long (at 10,000 services a
    sweep costs ~0.1 s of CPU, which every second took 30% of the daemon's
    heartbeat throughput), but never past
    down_time / 2. A service that beat after a sweep expires at least
    down_time after it, so with a period under down_time every expiry is
    known one sweep ahead: down events come when the death is due, not up to
    a period late. The floor of a quarter interval bounds the extra sweeps
    when expiries keep coming (an early guess, a dying rack).
    """
    period = max(interval, min(took / budget, down_time / 2))
    wake = started + period
    if expires_at is None:
        return wake
    return min(wake, max(started + interval / 4, expires_at + EXPIRY_MARGIN))


@dataclass
class SweepStats:
    """What /metrics shows about this daemon's sweeper."""

    leader: bool = False
    epoch: int = 0
    sweeps: int = 0
    last_duration: float = 0.0
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    # binary -> 1 while its down events are held back, 0 once released.
    mass_down_protection: dict[str, int] = field(default_factory=dict)


class Sweeper:
    """Runs in every daemon; sweeps only while it holds the lease."""

    def __init__(
        self,
        fleet: Fleet,
        conf: cfg.ConfigOpts,
        holder: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.fleet = fleet
        self.clock = clock
        self.interval: float = conf.events.sweep_interval
        self.full_interval: float = conf.events.full_sweep_interval
        self.budget: float = conf.events.sweep_budget
        self.slice: int = conf.events.sweep_slice
        times = fleet.times
        # The shortest down time bounds the lease and the sweep period: the
        # deaths of that binary's services must not go unnoticed either.
        self.lease = lease.duration(conf, times.shortest)
        self.down_after: int = conf.events.down_after
        self.up_after: int = conf.events.up_after
        self.retention: float = conf.events.retention
        self.mass = MassDown(
            conf.events.mass_down_threshold,
            conf.events.mass_down_min_services,
            times.default_down_time,
            times.down_times,
        )
        self._held: dict[str, float] = {}
        self.holder = holder or f"{socket.gethostname()}:{uuid_mod.uuid4().hex[:12]}"
        self.hooks = EventHooks(list(conf.events.hooks), conf.events.hook_timeout)
        self.stats = SweepStats()
        self.recovery = Recovery(fleet.engine, conf, self.holder)
        # Its own thread: a slow bus must never delay a sweep (leader/notifier.py).
        self.notifier = notifier_from_conf(fleet.engine, conf, poll_interval=self.interval)
        self._epoch: int | None = None
        self._renewed_at = 0.0  # monotonic time of the last lease renewal
        self._pending: dict[str, tuple[str, int]] = {}
        self._hook_cursor = 0
        # The incremental sweep's state (leader/schedule.py): None until the
        # first full read of a leadership; the events it has seen; when the
        # next full read is due (monotonic).
        self._schedule: ReadSchedule | None = None
        self._event_cursor = 0
        self._next_full = 0.0
        self._scheduled_full = False  # the last sweep was a full read of an incremental sweeper
        self._next_prune = 0.0
        self._failures = FailureLog(
            LOG, "sweeper: cannot sweep: %s", "sweeper: database answers again"
        )
        # Monotonic time at which the first service up at the last sweep
        # expires unless it beats; see next_sweep().
        self.expires_at: float | None = None
        # Called (on the sweeper's thread) after events were written, so a
        # long-poll in this process answers at once instead of at its next poll.
        self.on_events: Callable[[], None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Sweeper:
        if self.notifier is not None:
            self.notifier.start()
        self._thread = threading.Thread(target=self._run, name="sweeper", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.hooks.close()
        self.recovery.close()
        if self.notifier is not None:
            self.notifier.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self.clock.monotonic()
            cpu_started = time.thread_time()
            try:
                self.sweep()
                self._failures.ended()
            except BackendError as exc:
                self._failures.failed(exc)
            except Exception:
                LOG.exception("sweeper: unexpected error; sweeping goes on")
            wake = next_sweep(
                started,
                self.interval,
                self.expires_at,
                # What a sweep costs the API is its thread's CPU; its wall
                # time also holds the pauses between slices, and the waits
                # for the GIL while requests run: the API's time, not its.
                # A scheduled full read is paid once per full_sweep_interval,
                # so it must not space out the cheap sweeps after it.
                took=0.0 if self._scheduled_full else time.thread_time() - cpu_started,
                budget=self.budget,
                down_time=self.fleet.times.shortest,
            )
            self._wait_holding_the_lease(wake)

    def _wait_holding_the_lease(self, wake: float) -> None:
        """Sleep until monotonic `wake`, renewing the lease every third of it meanwhile.

        sweep_budget spaces costly sweeps out up to service_down_time / 2,
        while the lease lasts 3 sweep_intervals. Unrenewed between sweeps,
        the leader's lease lapsed at every long wait: another daemon took
        the leadership (at 100,000 services two workers swapped it 7 times
        in two minutes), or this one took it back at a new epoch, and each
        new leadership starts with a full read, which spaced the next sweep
        out again. A renewal that fails leaves the rest to the next sweep.
        """
        renewing = True
        while not self._stop.is_set():
            now = self.clock.monotonic()
            due = self._renewed_at + self.lease / 3 if renewing and self._epoch else math.inf
            if due >= wake:
                self._stop.wait(max(0.0, wake - now))
                return
            self._stop.wait(max(0.0, due - now))
            if self._stop.is_set():
                return
            try:
                epoch = self._renew()
                if epoch != self._epoch:
                    self._set_leader(epoch or None)
            except BackendError:
                renewing = False

    def _renew(self) -> int:
        """Renew the lease at our epoch, or take it if it lapsed: the epoch held, 0 if none."""
        now = self.clock.monotonic()
        with sql_errors():
            epoch = lease.acquire(
                self.fleet.engine, lease.SWEEPER, self.holder, self._epoch, self.lease
            )
        if epoch:
            self._renewed_at = now
        return epoch

    def sweep(self) -> list[Transition]:
        """One sweep; the transitions written (none unless we lead)."""
        started = time.perf_counter()
        engine = self.fleet.engine
        renewing_at = self.clock.monotonic()
        with sql_errors():
            epoch = lease.acquire(engine, lease.SWEEPER, self.holder, self._epoch, self.lease)
        if not epoch:
            self._set_leader(None)
            return []
        self._set_leader(epoch)
        self._renewed_at = renewing_at
        hold = lease.Hold(lease.SWEEPER, self.holder, epoch, self.lease)
        try:
            statuses, sizes = self._read()
        except LeaseLost:
            self._set_leader(None)
            return []
        decision = decide(
            statuses,
            self._pending,
            self.down_after,
            self.up_after,
            mass=self.mass,
            held=self._held,
            now=self.clock.monotonic(),
            sizes=sizes,
        )
        self._log_protection(decision.held, statuses)
        transitions, self._pending, self._held = decision
        written: list[Transition] = []
        if transitions:
            result = write_transitions(engine, transitions, hold)
            if result is None:
                self._set_leader(None)
                return []
            written = result
        if written and self.on_events is not None:
            self.on_events()
        if written and self.notifier is not None:
            self.notifier.wake()
        for t in written:
            self.stats.transitions[t.status.service.binary, t.state] += 1
        log_transitions(written)
        self._feed_hooks()
        # Claims whose owner this sweep (or an earlier one) saw go down.
        self.recovery.run(hold)
        self._prune()
        self.stats.sweeps += 1
        self.stats.last_duration = time.perf_counter() - started
        return written

    def _read(self) -> tuple[list[ServiceStatus], Mapping[str, int] | None]:
        """The statuses this sweep must judge, and each binary's size when they are not all.

        A full read at the start of a leadership and every full_sweep_interval;
        in between, only what can have changed (leader/schedule.py).
        """
        self._scheduled_full = False
        if not self.fleet.beat_times:
            return self._read_all(None), None
        now = self.clock.monotonic()
        schedule = self._schedule
        if schedule is None or now >= self._next_full:
            self._scheduled_full = True
            with sql_errors():
                cursor = event_log.last_id(self.fleet.engine)  # before: nothing falls between
            times = self.fleet.times
            schedule = ReadSchedule(times.default_down_time, times.down_times)
            statuses = self._read_all(schedule)
            self._schedule, self._event_cursor = schedule, cursor
            self._next_full = now + self.full_interval
        else:
            statuses = self._read_changed(schedule, now)
        self.expires_at = schedule.next_expiry()
        return statuses, schedule.sizes

    def _read_all(self, schedule: ReadSchedule | None) -> list[ServiceStatus]:
        """Every service's status, sweep_slice at a time, pausing between slices.

        Each pause is as long as its slice took, so while a sweep runs the
        sweeper holds the GIL half of the time at most, and the requests that
        queued behind a slice are answered before the next one (ServiceGroup.slices).
        Each slice is scheduled from its own read time; without a schedule,
        expires_at comes from it.
        """
        statuses: list[ServiceStatus] = []
        expires_at = None
        read_started, began = self.clock.monotonic(), time.perf_counter()
        for snapshot in self.fleet.slices(self.slice):
            statuses += snapshot.statuses
            if schedule is not None:
                schedule.learn(snapshot, read_started)
            else:
                times = self.fleet.times
                expiry = seconds_to_expiry(snapshot, times.default_down_time, times.down_times)
                if expiry is not None and (
                    expires_at is None or read_started + expiry < expires_at
                ):
                    expires_at = read_started + expiry
            if len(snapshot.statuses) == self.slice:  # a full slice: more may follow
                self._pause_between_slices(time.perf_counter() - began)
            read_started, began = self.clock.monotonic(), time.perf_counter()
        if schedule is None:
            self.expires_at = expires_at
        return statuses

    def _read_changed(self, schedule: ReadSchedule, now: float) -> list[ServiceStatus]:
        """The statuses of what can have changed since the last sweep, in slices.

        Due up services, services not up and services the new events name
        (those two in turns when there are many: ReadSchedule.due), and
        those still being damped (decide() counts consecutive sweeps). A
        read that fails leaves them all to be read by the next sweep.
        """
        # Its own events name services it has just read: not a change to look at.
        with sql_errors():
            cursor, touched = event_log.touched_since(
                self.fleet.engine, self._event_cursor, ignore=SWEEP_CAUSES
            )
        # What events name joins the services read in turns: a registration
        # storm must not make one sweep read all of it (WATCH_SLICES).
        schedule.watch(touched)
        due = schedule.due(now, watch_limit=WATCH_SLICES * max(self.slice, 1))
        wanted = sorted(due | self._pending.keys())
        size = self.slice or len(wanted) or 1
        statuses: list[ServiceStatus] = []
        for start in range(0, len(wanted), size):
            chunk = wanted[start : start + size]
            read_started, began = self.clock.monotonic(), time.perf_counter()
            try:
                snapshot = self.fleet.snapshot_of(chunk)
                schedule.learn(snapshot, read_started)
                found = {status.service.uuid for status in snapshot.statuses}
                schedule.forget(uuid for uuid in chunk if uuid not in found)  # deleted
                statuses += snapshot.statuses
                if start + size < len(wanted):
                    self._pause_between_slices(time.perf_counter() - began)
            except BaseException:
                schedule.watch(wanted[start:])
                raise
        self._event_cursor = cursor
        return statuses

    def _pause_between_slices(self, took: float) -> None:
        """Yield the GIL for as long as the slice took, and keep the lease through a long read.

        A full read of 100,000 services outlasts the lease (3 x sweep_interval
        by default); without a renewal between slices another daemon would
        take the lease mid-read, and this sweep's transitions would be
        refused at the end. Renewal is one small UPDATE, done once a third of
        the lease has gone by. LeaseLost ends the read when the renewal finds
        another holder (or a new epoch: our hold lapsed and was retaken).
        """
        self._stop.wait(took)
        if self.clock.monotonic() - self._renewed_at < self.lease / 3:
            return
        epoch = self._renew()
        if epoch != self._epoch:
            raise LeaseLost(f"sweeper lease: held at epoch {self._epoch}, now {epoch or 'another'}")

    def _log_protection(self, held: Mapping[str, float], statuses: Sequence[ServiceStatus]) -> None:
        """One line when a binary's protection starts, one when it ends."""
        for binary in held.keys() - self._held.keys():
            of_binary = [s for s in statuses if s.service.binary == binary]
            down = sum(
                1 for s in of_binary if s.state is State.DOWN and s.service.observed_state != "down"
            )
            LOG.warning(
                "mass-down protection: %d of %d %s services went down in one sweep; holding "
                "their down events for %gs (the liveness path failing is likelier than a fleet "
                "dying)",
                down,
                len(of_binary),
                binary,
                self.mass.hold_of(binary),
            )
        for binary in self._held.keys() - held.keys():
            LOG.info("mass-down protection for %s ended; down events flow again", binary)
        for binary in held.keys() | self._held.keys():
            self.stats.mass_down_protection[binary] = int(binary in held)

    def _set_leader(self, epoch: int | None) -> None:
        if epoch == self._epoch:
            return
        if epoch is None:
            LOG.warning("sweeper: no longer the leader (epoch %s)", self._epoch)
            self.expires_at = None
        else:
            LOG.info("sweeper: leading the sweep as %s (epoch %s)", self.holder, epoch)
            # Start hooks at the stream's end: hooks are best effort, the
            # stream is the record (a predecessor fed the earlier events).
            if self.hooks:
                with sql_errors():
                    self._hook_cursor = event_log.last_id(self.fleet.engine)
            self._next_prune = 0.0
        self._epoch = epoch
        if self.notifier is not None:
            hold = (
                None if epoch is None else lease.Hold(lease.SWEEPER, self.holder, epoch, self.lease)
            )
            self.notifier.lead(hold)
        self._pending = {}
        self._held = {}
        self._schedule = None  # a new leadership starts with a full read
        self.stats.leader = epoch is not None
        self.stats.epoch = epoch or 0

    def _feed_hooks(self) -> None:
        if not self.hooks:
            return
        with sql_errors():
            new = event_log.read(self.fleet.engine, since=self._hook_cursor)
        for event in new:
            self.hooks.submit(event.as_dict())
        if new:
            self._hook_cursor = new[-1].id

    def _prune(self) -> None:
        now = self.clock.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + min(PRUNE_EVERY, self.retention / 10)
        with sql_errors():
            removed = event_log.prune(self.fleet.engine, self.retention)
        if removed:
            LOG.info("sweeper: pruned %d events older than %.0fs", removed, self.retention)
