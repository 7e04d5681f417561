"""ServiceGroup: the public API, and the one place that decides state.

Drivers report when they last saw each service; this module alone turns that
into up, down or unknown, so every driver means the same thing by "up".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from oslo_config import cfg

from servicegroup import conf as sg_conf
from servicegroup import drivers, gcpause, validation
from servicegroup.claims import ClaimsMixin
from servicegroup.clock import SYSTEM_CLOCK, Clock
from servicegroup.db import events as db_events
from servicegroup.db import migration, records
from servicegroup.db.engine import make_engine
from servicegroup.drivers.base import NEVER, UNKNOWN, Pulse, Reading
from servicegroup.events import EventBatch, Watcher
from servicegroup.exceptions import BackendError
from servicegroup.reporter import Reporter
from servicegroup.service import Service, ServiceStatus, Snapshot, State, new_status

LOG = logging.getLogger(__name__)

ServiceRef = Service | str


def judge(
    service: Service,
    pulse: Pulse,
    now: datetime | None,
    down_time: float,
    outage: tuple[float, float] | None = None,
) -> State:
    """The state rule, for every driver: forced down wins, then the backend's word.

    `outage` is (began, ended) seconds before `now` of the last time this
    process could not read liveness. That time does not count towards a
    heartbeat's age: nobody could write a heartbeat then either, so silence
    during an outage is no evidence of death. Without it, a backend back
    from an outage longer than the down time reads as a fleet that died
    (every heartbeat stale) until each service's next beat lands.
    """
    return judge_all([service], {service.uuid: pulse}, NEVER, now, down_time, outage)[0]


class StatusReuse:
    """The ServiceStatus each service got at its last read, handed out again while equal.

    A status is immutable and holds the Service, its state and its last
    beat: when records.Reuse gave back the same Service and the driver the
    same beat (db: the same Pulse; the others: an equal time) and the state
    is the same, the old status is the right one. A dict lookup and three
    comparisons cost less than building one (0.5 us), which at 10,000
    services per read is what keeps get_all near its raw floor. One dict
    for every read: a uuid's status does not depend on the filters that
    found it. Racing reads may both build; either result is correct.
    """

    MAX = 1_000_000

    def __init__(self) -> None:
        self._last: dict[str, ServiceStatus] = {}

    def build(
        self,
        services: list[Service],
        states: list[State],
        pulses: Mapping[str, Pulse],
        missing: Pulse,
    ) -> list[ServiceStatus]:
        last = self._last
        if len(last) > self.MAX:  # bound memory on endless churn
            last.clear()
        found, get = last.get, pulses.get
        statuses: list[ServiceStatus] = []
        append = statuses.append
        for service, state in zip(services, states, strict=True):
            beat = get(service.uuid, missing).last_heartbeat
            status = found(service.uuid)
            if (
                status is None
                or status.service is not service
                or status.state is not state
                or status.last_heartbeat != beat
            ):
                status = last[service.uuid] = new_status(service, state, beat)
            append(status)
        return statuses

    def keep(self, live: Collection[str]) -> None:
        """Forget the statuses of uuids not in `live`: deleted services, once read past."""
        records.keep_only(self._last, live)


def judge_all(
    services: list[Service],
    pulses: Mapping[str, Pulse],
    missing: Pulse,
    now: datetime | None,
    down_time: float,
    outage: tuple[float, float] | None = None,
) -> list[State]:
    """judge() for many services at once; `missing` stands for a uuid absent from pulses.

    Without an outage to excuse, up iff age = now - last_heartbeat <=
    down_time, i.e. iff the last heartbeat is at or after the cutoff
    now - down_time: one subtraction per read rather than one per service,
    which at 10,000 services matters. Within down_time after an outage, the
    age is computed per service, outage time taken out (see judge()).
    """
    up, down, unknown = State.UP, State.DOWN, State.UNKNOWN
    cutoff = None if now is None else now - timedelta(seconds=down_time)
    states = []
    append = states.append
    get = pulses.get
    for service in services:
        pulse = get(service.uuid, missing)
        if service.deleted or service.forced_down:
            append(down)
        elif not pulse.known:
            append(unknown)
        else:
            beat = pulse.last_heartbeat
            if beat is None or now is None:
                append(down)
            elif outage is None:
                append(up if beat >= cutoff else down)  # type: ignore[operator]
            else:
                age = (now - beat).total_seconds()
                began, ended = outage
                age -= max(0.0, min(age, began) - ended)
                append(up if age <= down_time else down)
    return states


def seconds_to_expiry(snapshot: Snapshot, down_time: float) -> float | None:
    """Seconds after the read until its first up service is down, if that one never beats again.

    The sweeper sleeps until then rather than a whole sweep_interval, so a
    death is reported as it happens, not up to an interval later. It leaves
    out judge()'s outage excuse, which can only make the answer early: an
    early sweep finds the service still up and asks again. None: no up
    service has a heartbeat to expire.
    """
    if snapshot.read_at is None:
        return None
    up = State.UP
    beats = [s.last_heartbeat for s in snapshot.statuses if s.state is up and s.last_heartbeat]
    if not beats:
        return None
    return (min(beats) - snapshot.read_at).total_seconds() + down_time


class _DriverErrors:
    """A `with` block in which the driver's backend_errors become BackendError: the one place.

    A class, not @contextlib.contextmanager, because every heartbeat enters
    it: the generator-based one cost 0.96 us a with block, this 0.18 us
    (timeit), of a 14-100 us beat. Holds no state of its own, so one
    instance serves every thread and nested use.
    """

    __slots__ = ("_group",)

    def __init__(self, group: ServiceGroup) -> None:
        self._group = group

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> bool:
        driver = self._group.driver
        if exc is not None and isinstance(exc, driver.backend_errors):
            raise BackendError(driver.backend, str(exc) or type(exc).__name__) from exc
        return False


class ServiceGroup(ClaimsMixin):
    """Register services, heartbeat them, and ask who is up.

    Records live in SQL (`[database] connection`); liveness in the configured
    driver. Safe to share between threads. Claims (claim, renew, release,
    fence...) come from ClaimsMixin (claims.py).
    """

    def __init__(self, conf: cfg.ConfigOpts, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.conf = conf
        self.clock = clock
        self.down_time = sg_conf.effective_down_time(conf)
        self.report_interval: float = conf.report_interval
        driver_cls = drivers.load(conf.driver)
        self.engine = make_engine(
            sg_conf.database_url(conf),
            connect_timeout=conf.database.connect_timeout,
            pool_size=conf.database.pool_size,
            query_timeout=conf.database.query_timeout,
        )
        try:
            with records.sql_errors():
                migration.check(self.engine)
                db_events.ensure_sequence(self.engine)
            self.driver = driver_cls(conf, self.engine, clock)
        except Exception:
            self.engine.dispose()
            raise
        self._reporters: dict[str, Reporter] = {}
        self._lock = threading.Lock()
        self._driver_errors = _DriverErrors(self)
        self._reuse = records.Reuse()
        self._statuses = StatusReuse()
        self._read_failing = False
        # Monotonic (start, end) of the last liveness outage this process saw.
        self._outage: tuple[float, float | None] | None = None

    @classmethod
    def from_options(
        cls,
        config_file: str | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        **options: Any,
    ) -> ServiceGroup:
        """For scripts and tests: options as keywords, 'group__name' for non-DEFAULT groups."""
        files = [config_file] if config_file else []
        return cls(sg_conf.make_conf(config_files=files, **options), clock=clock)

    def close(self) -> None:
        with self._lock:
            reporters, self._reporters = list(self._reporters.values()), {}
        for reporter in reporters:
            reporter.stop()
        try:
            self.driver.close()
        finally:
            self.engine.dispose()

    def __enter__(self) -> ServiceGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- records ---------------------------------------------------------------

    def register(
        self,
        host: str,
        binary: str,
        topic: str | None = None,
        availability_zone: str | None = None,
        version: int = 0,
    ) -> Service:
        service, _created = self.register_ex(host, binary, topic, availability_zone, version)
        return service

    def register_ex(
        self,
        host: str,
        binary: str,
        topic: str | None = None,
        availability_zone: str | None = None,
        version: int = 0,
    ) -> tuple[Service, bool]:
        """register(), also saying whether the record is new (HTTP answers 201 or 200)."""
        return records.register(
            self.engine,
            validation.name("host", host),
            validation.name("binary", binary),
            validation.name("topic", topic, required=False),
            validation.name("availability_zone", availability_zone, required=False),
            validation.version(version),
        )

    def set_disabled(
        self, service: ServiceRef, disabled: bool, reason: str | None = None
    ) -> Service:
        disabled = validation.flag("disabled", disabled)
        reason = validation.reason(reason)
        return records.set_fields(
            self.engine, self._uuid(service), disabled=disabled, disabled_reason=reason
        )

    def set_forced_down(self, service: ServiceRef, forced: bool) -> Service:
        forced = validation.flag("forced_down", forced)
        return records.set_fields(self.engine, self._uuid(service), forced_down=forced)

    def set_version(self, service: ServiceRef, version: int) -> Service:
        return records.set_fields(
            self.engine, self._uuid(service), version=validation.version(version)
        )

    def update(self, service: ServiceRef, **changes: Any) -> Service:
        """Several admin changes at once, all validated before any is written."""
        fields: dict[str, Any] = {}
        for key, value in changes.items():
            if key in ("disabled", "forced_down"):
                fields[key] = validation.flag(key, value)
            elif key == "disabled_reason":
                fields[key] = validation.reason(value)
            elif key == "version":
                fields[key] = validation.version(value)
            else:
                raise validation.InvalidInput(key, "is not a field that can be changed")
        if not fields:
            return self._record(service)
        return records.set_fields(self.engine, self._uuid(service), **fields)

    def delete(self, service: ServiceRef) -> None:
        """Soft-delete the record; its name is free to register again."""
        record = self._record(service)
        self.leave(record)
        records.soft_delete(self.engine, record.uuid)

    # -- liveness --------------------------------------------------------------

    def heartbeat(self, service: ServiceRef) -> None:
        record = service if isinstance(service, Service) else self._record(service)
        with self._driver_call():
            self.driver.beat(record)

    def join(self, service: Service) -> Reporter:
        """Start a background reporter: a beat now, then one every report_interval."""
        reporter = Reporter(
            service, self.heartbeat, self.report_interval, self.driver.backend, self.clock
        )
        with self._lock:
            old = self._reporters.pop(service.uuid, None)
            self._reporters[service.uuid] = reporter
        if old is not None:
            old.stop()
        return reporter.start()

    def leave(self, service: ServiceRef) -> None:
        """Stop reporting and make the service down at once; the record stays."""
        record = service if isinstance(service, Service) else self._record(service)
        with self._lock:
            reporter = self._reporters.pop(record.uuid, None)
        if reporter is not None:
            reporter.stop()
        with self._driver_call():
            self.driver.forget(record)

    def is_up(self, service: ServiceRef) -> bool:
        statuses = self._snapshot(uuids=[self._uuid(service)]).statuses
        return bool(statuses) and statuses[0].is_up

    def get(self, service: ServiceRef) -> ServiceStatus:
        uuid = self._uuid(service)
        statuses = self._snapshot(uuids=[uuid]).statuses
        if not statuses:
            raise records.NotFound("service", uuid)
        return statuses[0]

    def get_all(
        self,
        binary: str | None = None,
        host: str | None = None,
        topic: str | None = None,
        availability_zone: str | None = None,
        state: State | str | None = None,
    ) -> list[ServiceStatus]:
        """Every matching service with its state: one SELECT, one driver read."""
        wanted = validation.state(None if state is None else str(state))
        statuses = self.snapshot(binary, host, topic, availability_zone).statuses
        if wanted is None:
            return statuses
        return [s for s in statuses if s.state == wanted]

    def snapshot(
        self,
        binary: str | None = None,
        host: str | None = None,
        topic: str | None = None,
        availability_zone: str | None = None,
    ) -> Snapshot:
        """get_all() plus whether liveness could be read at all, for metrics and health.

        With no matching record there is nothing to read, so the liveness
        backend is pinged instead: "no services" must not hide an outage.
        """
        snapshot = self._snapshot(
            binary=validation.name("binary", binary, required=False),
            host=validation.name("host", host, required=False),
            topic=validation.name("topic", topic, required=False),
            availability_zone=validation.name(
                "availability_zone", availability_zone, required=False
            ),
        )
        if snapshot.statuses:
            if binary is host is topic is availability_zone is None:
                self._keep_only([status.service.uuid for status in snapshot.statuses])
            return snapshot
        try:
            with self._driver_call():
                self.driver.ping()
        except BackendError:
            return Snapshot([], liveness_ok=False)
        return snapshot

    def slices(self, size: int) -> Iterator[Snapshot]:
        """Every live service, `size` at a time in uuid order (0: all at once): for the sweeper.

        Each slice is one SELECT and one driver read. A read of 10,000
        services in one go held the GIL for ~50 ms (psycopg decodes a
        fetchall in C without letting go of it; then the Services and
        statuses are built), and a heartbeat landing in it waited as long:
        that was the daemon's p99. Read in slices, with the caller pausing
        between them, a request waits behind one slice at most. The slices
        of one pass share the driver's pass_reader (tooz: one group read).
        A whole pass has read every live service, so it is where the
        services deleted since the last one are forgotten.
        """
        limit = None if size <= 0 else size
        after = None
        live: set[str] = set()
        read = self.driver.pass_reader()
        while True:
            snapshot = self._snapshot(after=after, limit=limit, read=read)
            yield snapshot
            live.update(status.service.uuid for status in snapshot.statuses)
            if limit is None or len(snapshot.statuses) < limit:
                break
            after = snapshot.statuses[-1].service.uuid
        self._keep_only(live)

    def _keep_only(self, live: Collection[str]) -> None:
        """Drop what is remembered of services not in `live`, a read of every live one."""
        self._reuse.keep(live)
        self._statuses.keep(live)

    def seconds_to_expiry(self, snapshot: Snapshot) -> float | None:
        """See seconds_to_expiry(): for the sweeper, with this group's down time."""
        return seconds_to_expiry(snapshot, self.down_time)

    def get_min_version(self, binary: str, up_only: bool = False) -> int | None:
        return self._version_range(binary, up_only)[0]

    def get_max_version(self, binary: str, up_only: bool = False) -> int | None:
        return self._version_range(binary, up_only)[1]

    def get_version_range(
        self, binary: str, up_only: bool = False
    ) -> tuple[int | None, int | None]:
        return self._version_range(binary, up_only)

    def health(self) -> dict[str, Any]:
        """Raise BackendError unless both the records database and the driver answer."""
        records.ping(self.engine)
        with self._driver_call():
            self.driver.ping()
        return {
            "driver": self.driver.name,
            "backend": self.driver.backend,
            **self.driver.describe(),
        }

    # -- events ----------------------------------------------------------------

    def events(
        self,
        since: int | None = None,
        binary: str | None = None,
        host: str | None = None,
        wait: float = 0.0,
        limit: int = db_events.MAX_PAGE,
    ) -> EventBatch:
        """Events after `since` (oldest kept first), waiting up to `wait` s for one.

        Blocks the calling thread while it waits; the HTTP daemon waits
        asynchronously instead (server/app.py).
        """
        since = validation.cursor(since)
        binary = validation.name("binary", binary, required=False)
        host = validation.name("host", host, required=False)
        deadline = time.monotonic() + validation.wait(wait)
        limit = validation.limit(limit)
        while True:
            batch = self.read_events(since, binary, host, limit)
            remaining = deadline - time.monotonic()
            if batch.events or remaining <= 0:
                return batch
            time.sleep(min(self.event_poll_interval, remaining))

    def read_events(
        self, since: int, binary: str | None, host: str | None, limit: int = db_events.MAX_PAGE
    ) -> EventBatch:
        """One read of the stream, inputs already validated."""
        with records.sql_errors():
            found = db_events.read(self.engine, since, binary, host, limit)
        return EventBatch(found, found[-1].id if found else since)

    @property
    def event_poll_interval(self) -> float:
        return min(0.2, self.conf.events.sweep_interval / 2)

    def watch(
        self,
        callback: Any,
        since: int | None = None,
        binary: str | None = None,
        host: str | None = None,
    ) -> Watcher:
        """Follow the stream on a thread, calling callback(event) for each; stop() ends it."""
        validation.cursor(since)
        validation.name("binary", binary, required=False)
        validation.name("host", host, required=False)
        return Watcher(self, callback, since, binary, host, poll=self.event_poll_interval).start()

    # -- internals -------------------------------------------------------------

    def _version_range(self, binary: str, up_only: bool) -> tuple[int | None, int | None]:
        binary = validation.name("binary", binary)
        validation.flag("up_only", up_only)
        if not up_only:
            return records.version_range(self.engine, binary)
        versions = [s.service.version for s in self.get_all(binary=binary, state=State.UP)]
        return (min(versions), max(versions)) if versions else (None, None)

    def _snapshot(
        self,
        uuids: list[str] | None = None,
        read: Callable[[records.RecordSet], Reading] | None = None,
        **page_and_filters: Any,
    ) -> Snapshot:
        try:
            recordset = records.query(
                self.engine, uuids=uuids, reuse=self._reuse, **page_and_filters
            )
        except BackendError:
            # With the db driver the records are the liveness store.
            self._outage_seen()
            raise
        if not recordset.services:
            return Snapshot([], liveness_ok=True)
        missing = NEVER
        try:
            with self._driver_call():
                reading: Reading = (read or self.driver.read)(recordset)
        except BackendError as exc:
            # The records are fine; only liveness cannot be read. Say so
            # ("unknown") rather than calling a healthy fleet down.
            self._log_read_failure(exc)
            self._outage_seen()
            reading, missing = Reading(None, {}), UNKNOWN
        else:
            self._log_read_recovery()
        outage = None if missing is UNKNOWN else self._outage_ago()
        services, pulses = recordset.services, reading.pulses
        with gcpause.paused():  # building, no I/O: see gcpause.py
            states = judge_all(services, pulses, missing, reading.now, self.down_time, outage)
            statuses = self._statuses.build(services, states, pulses, missing)
        return Snapshot(statuses, liveness_ok=missing is NEVER, read_at=reading.now)

    def _outage_seen(self) -> None:
        now = self.clock.monotonic()
        outage = self._outage
        if outage is None or (outage[1] is not None and now - outage[1] > self.down_time):
            self._outage = (now, None)
        elif outage[1] is not None:
            # Back down soon after coming back: one outage, the gap counted in it.
            self._outage = (outage[0], None)

    def _outage_ago(self) -> tuple[float, float] | None:
        """The last outage as (began, ended) seconds ago, ending it if this read succeeded."""
        outage = self._outage
        if outage is None:
            return None
        now = self.clock.monotonic()
        began, ended = outage
        if ended is None:
            ended = now
            self._outage = (began, ended)
        if now - ended > self.down_time:
            # Every heartbeat older than the outage's end is past the down
            # time in available time too: nothing left to excuse.
            self._outage = None
            return None
        return (now - began, now - ended)

    def _log_read_failure(self, exc: BackendError) -> None:
        if not self._read_failing:
            self._read_failing = True
            LOG.warning("cannot read liveness from %s, states are unknown: %s", exc.backend, exc)

    def _log_read_recovery(self) -> None:
        if self._read_failing:
            self._read_failing = False
            LOG.info("reading liveness from %s again", self.driver.backend)

    def _uuid(self, service: ServiceRef) -> str:
        if isinstance(service, Service):
            return service.uuid
        return validation.service_id(service)

    def _record(self, service: ServiceRef) -> Service:
        return records.get(self.engine, self._uuid(service))

    def _driver_call(self) -> _DriverErrors:
        return self._driver_errors
