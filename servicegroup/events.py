"""Up/down events: the sweeper that records them, hooks, and a watcher.

One daemon at a time sweeps: it holds the "sweeper" lease in SQL (see
db/events.py for why SQL, whatever the driver). Every sweep it renews the
lease, takes ONE snapshot (sg.snapshot(): one SELECT, one liveness read),
decides what changed (`decide`, a pure function) and writes each change as a
compare-and-set on services.observed_state plus an appended event, in a
transaction fenced by the lease. So:

- two sweepers never duplicate an event: the CAS from the old state succeeds
  once; a deposed leader's fence fails and it writes nothing;
- a new leader loses nothing: it starts from observed_state in SQL, so a
  service that died during the hand-over is still "up" there and its down
  event is written by whoever sweeps next.

Admin actions are not the sweeper's business: records.py appends them in the
same transaction as the record change, from whichever process makes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import shlex
import socket
import subprocess
import threading
import time
import uuid as uuid_mod
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from oslo_config import cfg

from servicegroup.claims import Recovery
from servicegroup.db import events as db_events
from servicegroup.db import records
from servicegroup.db.engine import writing
from servicegroup.db.events import Draft, Event
from servicegroup.exceptions import BackendError
from servicegroup.service import ServiceStatus, State

if TYPE_CHECKING:
    from servicegroup.api import ServiceGroup

LOG = logging.getLogger(__name__)

LEASE_NAME = "sweeper"
# How long after a heartbeat's computed expiry the sweeper looks: stored
# times are rounded (SQLite keeps milliseconds), and at the exact instant
# judge() still says up.
EXPIRY_MARGIN = 0.01
HOOK_QUEUE_SIZE = 1000
PRUNE_EVERY = 60.0  # seconds between two prunes by the leader


@dataclass(frozen=True, slots=True)
class EventBatch:
    events: list[Event]
    # Pass it back as `since` to continue: the last id returned, or the since given.
    cursor: int


# -- deciding what to emit -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transition:
    status: ServiceStatus
    previous: str | None  # None: never observed; recorded silently, not an event
    state: str
    cause: str

    def draft(self) -> Draft:
        svc = self.status.service
        return Draft(svc.uuid, svc.host, svc.binary, self.previous, self.state, self.cause)


def cause_of(status: ServiceStatus) -> str:
    """Why a service is in its judged state, in the words events use."""
    if status.state is State.UP:
        return "heartbeat"
    if status.state is State.UNKNOWN:
        return "backend_unavailable"
    if status.service.forced_down:
        return "forced_down"
    if status.last_heartbeat is None:
        # The backend holds no heartbeat at all: leave(), or (zookeeper) the
        # session of a dead process expired and took its node.
        return "leave"
    return "heartbeat_timeout"


@dataclass(frozen=True, slots=True)
class MassDown:
    """Mass-expiry protection: when too much of a binary dies in one sweep, doubt it.

    A whole binary going down at once is far more often the liveness path
    failing (a backend restart, a network blip, the database back after an
    outage with every heartbeat stale) than a fleet dying; a consumer that
    evacuates on those events does real damage. So when more than
    `threshold` of a binary's services (and at least `min_services` of them)
    would go down in ONE sweep, that binary's down events are held back for
    `hold` seconds (service_down_time). A service still down when the hold
    ends is confirmed and its event written then; one that came back was a
    blip and is never reported.
    """

    threshold: float = 0.5
    min_services: int = 3
    hold: float = 60.0


class Decision(NamedTuple):
    transitions: list[Transition]
    # uuid -> (candidate state, consecutive sweeps seen), for damping.
    pending: dict[str, tuple[str, int]]
    # binary -> when (monotonic) its down events started being held back.
    held: dict[str, float]


def decide(
    statuses: Sequence[ServiceStatus],
    pending: Mapping[str, tuple[str, int]],
    down_after: int = 1,
    up_after: int = 1,
    *,
    mass: MassDown | None = None,
    held: Mapping[str, float] | None = None,
    now: float = 0.0,
) -> Decision:
    """The sweeper's one decision: which transitions to emit from this snapshot.

    `pending` maps a uuid to (candidate state, consecutive sweeps seen) for
    changes still being damped; the new map is returned. A change to up needs
    `up_after` agreeing sweeps, to down or unknown `down_after`. With `mass`,
    down transitions of a binary under mass-expiry protection (`held`, at
    monotonic time `now`) are kept back; see MassDown.
    """
    transitions: list[Transition] = []
    new_pending: dict[str, tuple[str, int]] = {}
    for status in statuses:
        svc = status.service
        current = status.state.value
        observed = svc.observed_state
        if observed is None:
            transitions.append(Transition(status, None, current, "observed"))
            continue
        if current == observed:
            continue
        candidate, seen = pending.get(svc.uuid, (current, 0))
        seen = seen + 1 if candidate == current else 1
        needed = up_after if current == State.UP.value else down_after
        if seen >= needed:
            transitions.append(Transition(status, observed, current, cause_of(status)))
        else:
            new_pending[svc.uuid] = (current, seen)
    new_held = dict(held or {})
    if mass is None:
        return Decision(transitions, new_pending, new_held)
    return _protect(statuses, transitions, new_pending, down_after, mass, new_held, now)


def _protect(
    statuses: Sequence[ServiceStatus],
    transitions: list[Transition],
    pending: dict[str, tuple[str, int]],
    down_after: int,
    mass: MassDown,
    held: dict[str, float],
    now: float,
) -> Decision:
    sizes = Counter(s.service.binary for s in statuses)
    downs = Counter(t.status.service.binary for t in transitions if _is_down(t))
    released = set()
    for binary, since in list(held.items()):
        if now - since >= mass.hold:
            del held[binary]  # confirmed: what is still down is written now
            released.add(binary)
        elif not downs[binary]:
            del held[binary]  # everyone came back: it was a blip
    for binary, count in downs.items():
        size = sizes[binary]
        if (
            binary not in held
            and binary not in released
            and size >= mass.min_services
            and count > mass.threshold * size
        ):
            held[binary] = now
    kept: list[Transition] = []
    for t in transitions:
        if _is_down(t) and t.status.service.binary in held:
            # Damping already agreed: still eligible at the next sweep.
            pending[t.status.service.uuid] = (t.state, down_after)
        else:
            kept.append(t)
    return Decision(kept, pending, held)


def _is_down(t: Transition) -> bool:
    return t.previous is not None and t.state == State.DOWN.value


def write_transitions(
    engine: Any,
    transitions: Sequence[Transition],
    holder: str,
    epoch: int,
    lease: float,
) -> list[Transition] | None:
    """Write transitions as CAS + events under the lease; None if we no longer lead.

    A CAS that misses means another writer (an admin action, another
    sweeper) changed observed_state since our snapshot: that transition is
    dropped, and the next sweep decides again from what SQL now says.
    """
    with records.sql_errors(), writing(engine) as conn:
        if not db_events.fence(conn, LEASE_NAME, holder, epoch, lease):
            return None
        db_events.lock_sequence(conn)
        changed = db_events.set_observed_many(
            conn, [(t.status.service.uuid, t.previous, t.state) for t in transitions]
        )
        done = [t for t in transitions if t.status.service.uuid in changed]
        db_events.append(conn, [t.draft() for t in done if t.previous is not None])
    return [t for t in done if t.previous is not None]


def lease_duration(conf: cfg.ConfigOpts, down_time: float) -> float:
    """The leader lease, kept short enough that a dead leader is replaced in time.

    A successor takes over at most lease + sweep_interval after the leader's
    last renewal; keeping that under service_down_time means the hand-over
    is quicker than any service death it must report.
    """
    interval = conf.events.sweep_interval
    lease = conf.events.leader_lease or 3 * interval
    ceiling = down_time - interval
    if lease > ceiling:
        fixed = max(ceiling, interval)
        LOG.warning(
            "[events] leader_lease %.3fs + sweep_interval %.3fs exceeds service_down_time "
            "%.3fs; using a lease of %.3fs",
            lease,
            interval,
            down_time,
            fixed,
        )
        lease = fixed
    return lease


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


# -- the sweeper -----------------------------------------------------------------


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

    def __init__(self, sg: ServiceGroup, conf: cfg.ConfigOpts, holder: str | None = None) -> None:
        self.sg = sg
        self.interval: float = conf.events.sweep_interval
        self.budget: float = conf.events.sweep_budget
        self.slice: int = conf.events.sweep_slice
        self.lease = lease_duration(conf, sg.down_time)
        self.down_after: int = conf.events.down_after
        self.up_after: int = conf.events.up_after
        self.retention: float = conf.events.retention
        self.mass = MassDown(
            conf.events.mass_down_threshold, conf.events.mass_down_min_services, sg.down_time
        )
        self._held: dict[str, float] = {}
        self.holder = holder or f"{socket.gethostname()}:{uuid_mod.uuid4().hex[:12]}"
        self.hooks = HookRunner(list(conf.events.hooks), conf.events.hook_timeout)
        self.stats = SweepStats()
        self.recovery = Recovery(sg, conf, self.holder)
        self._epoch: int | None = None
        self._pending: dict[str, tuple[str, int]] = {}
        self._hook_cursor = 0
        self._next_prune = 0.0
        self._failing = False
        # Monotonic time at which the first service up at the last sweep
        # expires unless it beats; see next_sweep().
        self.expires_at: float | None = None
        # Called (on the sweeper's thread) after events were written, so a
        # long-poll in this process answers at once instead of at its next poll.
        self.on_events: Callable[[], None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Sweeper:
        self._thread = threading.Thread(target=self._run, name="sweeper", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.hooks.close()
        self.recovery.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            cpu_started = time.thread_time()
            try:
                self.sweep()
                if self._failing:
                    self._failing = False
                    LOG.info("sweeper: database answers again")
            except BackendError as exc:
                if not self._failing:
                    self._failing = True
                    LOG.warning("sweeper: cannot sweep: %s", exc)
            except Exception:
                LOG.exception("sweeper: unexpected error; sweeping goes on")
            wake = next_sweep(
                started,
                self.interval,
                self.expires_at,
                # What a sweep costs the API is its thread's CPU; its wall
                # time also holds the pauses between slices, and the waits
                # for the GIL while requests run: the API's time, not its.
                took=time.thread_time() - cpu_started,
                budget=self.budget,
                down_time=self.sg.down_time,
            )
            self._stop.wait(max(0.0, wake - time.monotonic()))

    def sweep(self) -> list[Transition]:
        """One sweep; the transitions written (none unless we lead)."""
        started = time.perf_counter()
        engine = self.sg.engine
        with records.sql_errors():
            epoch = db_events.acquire(engine, LEASE_NAME, self.holder, self._epoch, self.lease)
        if not epoch:
            self._set_leader(None)
            return []
        self._set_leader(epoch)
        statuses = self._read_all()
        decision = decide(
            statuses,
            self._pending,
            self.down_after,
            self.up_after,
            mass=self.mass,
            held=self._held,
            now=time.monotonic(),
        )
        self._log_protection(decision.held, statuses)
        transitions, self._pending, self._held = decision
        written: list[Transition] = []
        if transitions:
            result = write_transitions(engine, transitions, self.holder, epoch, self.lease)
            if result is None:
                self._set_leader(None)
                return []
            written = result
        if written and self.on_events is not None:
            self.on_events()
        for t in written:
            self.stats.transitions[t.status.service.binary, t.state] += 1
            LOG.info(
                "%s on %s: %s -> %s (%s)",
                t.status.service.binary,
                t.status.service.host,
                t.previous,
                t.state,
                t.cause,
            )
        self._feed_hooks()
        # Claims whose owner this sweep (or an earlier one) saw go down.
        self.recovery.run(lambda c: db_events.fence(c, LEASE_NAME, self.holder, epoch, self.lease))
        self._prune()
        self.stats.sweeps += 1
        self.stats.last_duration = time.perf_counter() - started
        return written

    def _read_all(self) -> list[ServiceStatus]:
        """Every service's status, sweep_slice at a time, pausing between slices.

        Each pause is as long as its slice took, so while a sweep runs the
        sweeper holds the GIL half of the time at most, and the requests that
        queued behind a slice are answered before the next one (api.slices).
        expires_at comes from each slice's own read time.
        """
        statuses: list[ServiceStatus] = []
        expires_at = None
        read_started = time.monotonic()
        for snapshot in self.sg.slices(self.slice):
            statuses += snapshot.statuses
            expiry = self.sg.seconds_to_expiry(snapshot)
            if expiry is not None and (expires_at is None or read_started + expiry < expires_at):
                expires_at = read_started + expiry
            if len(snapshot.statuses) == self.slice:  # a full slice: more may follow
                self._stop.wait(time.monotonic() - read_started)
            read_started = time.monotonic()
        self.expires_at = expires_at
        return statuses

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
                self.mass.hold,
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
                with records.sql_errors():
                    self._hook_cursor = db_events.last_id(self.sg.engine)
            self._next_prune = 0.0
        self._epoch = epoch
        self._pending = {}
        self._held = {}
        self.stats.leader = epoch is not None
        self.stats.epoch = epoch or 0

    def _feed_hooks(self) -> None:
        if not self.hooks:
            return
        with records.sql_errors():
            new = db_events.read(self.sg.engine, since=self._hook_cursor)
        for event in new:
            self.hooks.submit(event.as_dict())
        if new:
            self._hook_cursor = new[-1].id

    def _prune(self) -> None:
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + min(PRUNE_EVERY, self.retention / 10)
        with records.sql_errors():
            removed = db_events.prune(self.sg.engine, self.retention)
        if removed:
            LOG.info("sweeper: pruned %d events older than %.0fs", removed, self.retention)


# -- hooks -----------------------------------------------------------------------


class Hook:
    """One command with its own bounded queue and worker thread.

    Separate workers mean a slow or hanging hook delays nobody but itself;
    the bounded queue means it cannot eat memory either: a full queue drops
    the event and counts it.
    """

    def __init__(self, command: str, timeout: float) -> None:
        self.command = command
        self.argv = shlex.split(command)
        self.timeout = timeout
        self.runs = 0
        self.failures = 0
        self.dropped = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(HOOK_QUEUE_SIZE)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._work, name=f"hook {command}", daemon=True)
        self._thread.start()

    def submit(self, event: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            LOG.warning("hook %r is behind; dropped event %s", self.command, event.get("id"))

    def close(self) -> None:
        """Stop after the current run; queued events are dropped (hooks are best effort).

        Waiting for the queue to drain could take queue size x timeout.
        """
        self._closed.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _work(self) -> None:
        while not self._closed.is_set():
            try:
                event = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if event is None or self._closed.is_set():
                return
            self.run(event)

    def run(self, event: dict[str, Any]) -> bool:
        self.runs += 1
        try:
            result = subprocess.run(
                self.argv,
                input=json.dumps(event).encode(),
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return self._failed(event, f"timed out after {self.timeout:g}s")
        except OSError as exc:
            return self._failed(event, str(exc))
        if result.returncode != 0:
            tail = result.stderr.decode(errors="replace").strip().splitlines()[-1:]
            return self._failed(event, f"exit {result.returncode} {' '.join(tail)}".strip())
        return True

    def _failed(self, event: dict[str, Any], why: str) -> bool:
        self.failures += 1
        LOG.warning("hook %r failed on event %s: %s", self.command, event.get("id"), why)
        return False


class HookRunner:
    def __init__(self, commands: list[str], timeout: float) -> None:
        self.hooks = [Hook(command, timeout) for command in commands if command.strip()]

    def __bool__(self) -> bool:
        return bool(self.hooks)

    def submit(self, event: dict[str, Any]) -> None:
        for hook in self.hooks:
            hook.submit(event)

    def close(self) -> None:
        for hook in self.hooks:
            hook.close()


# -- following the stream --------------------------------------------------------


class Watcher:
    """Calls `callback(event)` for each new event, on a thread, until stop().

    A callback that raises does not stop it: the error is logged once (and
    again only after a success), counted, and the next event follows.
    The cursor moves past every event, failed or not; a consumer that needs
    exactly-once keeps its own cursor with its own state (doc/events.md).
    """

    def __init__(
        self,
        sg: ServiceGroup,
        callback: Callable[[Event], object],
        since: int | None = None,
        binary: str | None = None,
        host: str | None = None,
        poll: float = 0.1,
    ) -> None:
        self.sg = sg
        self.callback = callback
        self.cursor = since or 0
        self.binary = binary
        self.host = host
        self.poll = poll
        self.errors = 0
        self._logged = False
        self._read_failing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event watcher", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self.sg.events(since=self.cursor, binary=self.binary, host=self.host)
                self._read_failing = False
            except BackendError as exc:
                if not self._read_failing:
                    self._read_failing = True
                    LOG.warning("event watcher: cannot read events: %s", exc)
                self._stop.wait(self.poll)
                continue
            for event in batch.events:
                if self._stop.is_set():
                    return
                self._deliver(event)
                self.cursor = event.id
            self.cursor = max(self.cursor, batch.cursor)
            if not batch.events:
                self._stop.wait(self.poll)

    def _deliver(self, event: Event) -> None:
        try:
            self.callback(event)
        except Exception:
            self.errors += 1
            if not self._logged:
                self._logged = True
                LOG.exception("event watcher: callback failed on event %s", event.id)
        else:
            self._logged = False
