"""ServiceGroup: the public API, for every caller (the daemon, the CLI, agents, scripts).

It validates what a caller gives it (validation.py), keeps records in SQL
(db/records.py), moves heartbeats through the configured liveness driver
(drivers/), and hands every reading to the one state rule (state.py). Claims
on in-flight work are here too (claim, renew, release...); the rows they live
in are db/claim_rows.py, and their recovery is the sweeping leader's
(leader/recovery.py). Nothing here runs only on the leader.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid as uuid_mod
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

from oslo_config import cfg

from servicegroup import conf as sg_conf
from servicegroup import drivers, gcpause, validation
from servicegroup.backend_errors import DriverErrors, sql_errors
from servicegroup.binary_times import BinaryTimes, Times
from servicegroup.claims import as_token
from servicegroup.clock import SYSTEM_CLOCK, Clock
from servicegroup.db import claim_rows, event_log, migration, records
from servicegroup.db.claim_rows import Claim
from servicegroup.db.engine import make_engine
from servicegroup.db.event_log import EventBatch
from servicegroup.drivers.base import NEVER, UNKNOWN, Pulse, Reading
from servicegroup.exceptions import BackendError, InvalidInput, NotFound
from servicegroup.failure_log import FailureLog
from servicegroup.identity_cache import IdentityCache
from servicegroup.outage import Outages
from servicegroup.reporter import Reporter
from servicegroup.service import (
    Registration,
    Service,
    ServiceStatus,
    Snapshot,
    State,
    new_status,
)
from servicegroup.state import judge_all
from servicegroup.watcher import Watcher

LOG = logging.getLogger(__name__)

ServiceRef = Service | str
# renew()'s "details not given", as distinct from details=None (clear them).
_UNSET: Any = object()


class StatusReuse:
    """The ServiceStatus each service got at its last read, handed out again while equal.

    A status is immutable and holds the Service, its state and its last
    beat: when records.Reuse gave back the same Service and the driver the
    same beat (db: the same Pulse; the others: an equal time) and the state
    is the same, the old status is the right one. A dict lookup and three
    comparisons cost less than building one (0.5 us), which at 10,000
    services per read is what keeps get_all near its raw floor. One table
    for every read: a uuid's status does not depend on the filters that
    found it. Racing reads may both build; either result is correct.
    """

    def __init__(self) -> None:
        self.cache: IdentityCache[ServiceStatus] = IdentityCache()

    def build(
        self,
        services: list[Service],
        states: list[State],
        pulses: Mapping[str, Pulse],
        missing: Pulse,
    ) -> list[ServiceStatus]:
        last = self.cache.for_read()
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


class ServiceGroup:
    """Register services, heartbeat them, ask who is up, and claim work.

    Records live in SQL (`[database] connection`); liveness in the configured
    driver. Safe to share between threads.
    """

    def __init__(self, conf: cfg.ConfigOpts, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.conf = conf
        self.clock = clock
        # Each binary's own down time and report interval; these two are the defaults.
        self.times = BinaryTimes.from_conf(conf)
        self.down_time = self.times.default_down_time
        self.report_interval: float = conf.report_interval
        driver_cls = drivers.load(conf.driver)
        self.engine = make_engine(
            sg_conf.database_url(conf),
            connect_timeout=conf.database.connect_timeout,
            pool_size=conf.database.pool_size,
            query_timeout=conf.database.query_timeout,
        )
        try:
            with sql_errors():
                migration.check(self.engine)
                event_log.ensure_sequence(self.engine)
            self.driver = driver_cls(conf, self.engine, clock)
        except Exception:
            self.engine.dispose()
            raise
        self._reporters: dict[str, Reporter] = {}
        self._lock = threading.Lock()
        self._driver_errors = DriverErrors(self.driver)
        self._reuse = records.Reuse()
        self._registering_new = False  # the last registration batch was mostly new services
        self._statuses = StatusReuse()
        self._other_caches: list[IdentityCache[Any]] = []
        self._read_failures = FailureLog(
            LOG,
            "cannot read liveness from %s, states are unknown: %s",
            "reading liveness from %s again",
        )
        # An outage is excused as long as some binary's heartbeats can still count.
        self._outages = Outages(clock, self.times.longest)
        # This process start's identity for claims: a ServiceGroup is never its former self.
        self.incarnation = str(uuid_mod.uuid4())

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
        registration = Registration(host, binary, topic, availability_zone, version)
        (answer,) = self.register_many([registration])
        return answer

    def register_many(self, registrations: Iterable[Registration]) -> list[tuple[Service, bool]]:
        """register_ex() for many services in one transaction, answers in the same order.

        For a fleet's cold start and the daemon's group commit: a few
        statements per batch, not five per service (db/records.py). A
        Registration is checked when it is made, so a bad one raises before
        the batch starts; the batch is then written whole or not at all.
        """
        return self._register(registrations).answers

    def _register(self, registrations: Iterable[Registration]) -> records.Registered:
        """One register_many(), told whether the last batch was mostly new services.

        Batches come in runs, a cold start's new names or a rolling
        restart's known ones, and PostgreSQL writes each kind in one
        statement fewer when it knows which to expect (records.register_many).
        """
        done = records.register_many(
            self.engine, list(registrations), self._reuse, expect_new=self._registering_new
        )
        self._registering_new = 2 * len(done.inserted) > len(done.answers)
        return done

    def register_statuses(
        self, registrations: Iterable[Registration]
    ) -> list[tuple[ServiceStatus, bool]]:
        """register_many(), answered with each record's status as get() would judge it.

        Without a read after the write: a row this batch inserted has a new
        uuid, so it has never beaten and is down whatever the backend holds;
        only the restarted ones need their liveness read, and the db
        driver's is the row the write returned. A read of the batch after
        its write halved the daemon's registrations/s on PostgreSQL.
        """
        done = self._register(registrations)
        batch = list({service.uuid: service for service, _ in done.answers}.values())
        old = [service for service in batch if service.uuid not in done.inserted]
        restarted = records.RecordSet(old, done.db_now)

        def read(_: records.RecordSet) -> Reading:
            if not restarted.services:
                return Reading(None, {})
            return self.driver.read(restarted)

        statuses = self._judged(records.RecordSet(batch, done.db_now), read).statuses
        by_uuid = {status.service.uuid: status for status in statuses}
        return [(by_uuid[service.uuid], created) for service, created in done.answers]

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
                raise InvalidInput(key, "is not a field that can be changed")
        if not fields:
            return self._record(service)
        return records.set_fields(self.engine, self._uuid(service), **fields)

    def delete(self, service: ServiceRef) -> None:
        """Soft-delete the record; its name is free to register again."""
        record = self._record(service)
        self.leave(record)
        records.soft_delete(self.engine, record.uuid)
        # Other processes forget it at their next read of the whole fleet.
        for cache in self._identity_caches():
            cache.discard(record.uuid)

    # -- liveness --------------------------------------------------------------

    def heartbeat(self, service: ServiceRef) -> None:
        record = service if isinstance(service, Service) else self._record(service)
        with self._driver_call():
            self.driver.beat(record)

    def heartbeat_many(self, services: Iterable[ServiceRef]) -> dict[str, BaseException]:
        """Heartbeat many services with one write per backend round trip: a batch.

        For a caller that beats for many services at once (an agent for a
        whole host, the daemon's group commit). Uuid strings are looked up
        in one SELECT; Services are beaten as given, as heartbeat() does.

        Returns the beats that failed on their own, by uuid, each with the
        error heartbeat() would have raised: NotFound for a service that is
        not registered (or was deleted), BackendError for one whose backend
        server failed while others answered. Every other beat was recorded.
        Raises BackendError when the whole batch failed, and InvalidInput,
        before anything is written, for an id that is not a uuid.
        """
        given: list[Service] = []
        by_id: list[str] = []
        for ref in services:
            if isinstance(ref, Service):
                given.append(ref)
            else:
                by_id.append(validation.service_id(ref))
        failed: dict[str, BaseException] = {}
        if by_id:
            found = self.records_of(by_id)
            for uuid in by_id:
                record = found.get(uuid)
                if record is None:
                    failed[uuid] = NotFound("service", uuid)
                else:
                    given.append(record)
        if given:
            with self._driver_call():
                beaten = self.driver.beat_many(given)
            translate = self._driver_errors.translate
            failed.update((uuid, translate(exc)) for uuid, exc in beaten.items())
        return failed

    def join(self, service: Service) -> Reporter:
        """Start a background reporter: a beat now, then one every report_interval."""
        interval = self.times.report_interval(service.binary)
        reporter = Reporter(service, self.heartbeat, interval, self.driver.backend, self.clock)
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
        records.record_leave(self.engine, record.uuid)

    def down_time_of(self, binary: str) -> float:
        """The down time that judges `binary`'s services: its own ([binaries]) or the global."""
        return self.times.down_time(binary)

    def times_of(self, binary: str) -> Times:
        """How often a service of `binary` must beat, and how soon it is down without.

        Its own [binaries] entries, the globals for a binary with none: for
        a process that beats from outside this library (servicegroup agent,
        an agent in another language) to beat as join() would.
        """
        return self.times.of(validation.name("binary", binary))

    def is_up(self, service: ServiceRef, down_time: float | None = None) -> bool:
        """Whether it is up; `down_time` judges it with that threshold instead of its binary's."""
        threshold = validation.down_time(down_time)
        statuses = self._snapshot(uuids=[self._uuid(service)], down_time=threshold).statuses
        return bool(statuses) and statuses[0].is_up

    def get(self, service: ServiceRef, down_time: float | None = None) -> ServiceStatus:
        uuid = self._uuid(service)
        threshold = validation.down_time(down_time)
        statuses = self._snapshot(uuids=[uuid], down_time=threshold).statuses
        if not statuses:
            raise NotFound("service", uuid)
        return statuses[0]

    def records_of(self, uuids: Collection[str]) -> dict[str, Service]:
        """The live records among `uuids`, by uuid: one SELECT per chunk, no liveness read."""
        return records.get_many(self.engine, uuids, self._reuse)

    def known(self, uuid: str) -> Service | None:
        """The record the last read of `uuid` found, without I/O; None if none did.

        It may be older than the row (the db driver's beats bump report_count)
        and it is forgotten when a whole read no longer finds it or the
        service is deleted here: for callers that only need to know that a
        record existed, as the daemon's heartbeat cache does.
        """
        entry = self._reuse.cache.entries.get(uuid)
        return None if entry is None else entry[1]

    def get_many(self, services: Iterable[ServiceRef]) -> dict[str, ServiceStatus]:
        """The statuses of many services in one read, by uuid; a missing one is left out."""
        uuids = [self._uuid(service) for service in services]
        return {s.service.uuid: s for s in self.snapshot_of(uuids).statuses}

    def snapshot_of(self, uuids: Collection[str]) -> Snapshot:
        """These services' statuses in one read (one SELECT, one driver read), with its time.

        For the incremental sweep (leader/schedule.py); a deleted one is left out.
        """
        if not uuids:
            return Snapshot([], liveness_ok=True)
        return self._snapshot(uuids=list(uuids))

    @property
    def beat_times(self) -> bool:
        """Whether the driver's heartbeat times let a sweep read only what changed."""
        return self.driver.beat_times

    def get_all(
        self,
        binary: str | None = None,
        host: str | None = None,
        topic: str | None = None,
        availability_zone: str | None = None,
        state: State | str | None = None,
        down_time: float | None = None,
    ) -> list[ServiceStatus]:
        """Every matching service with its state: one SELECT, one driver read.

        `down_time` judges every service with that threshold instead of its
        binary's: a scheduler may be quick to avoid a host while recovery
        waits longer. Events, metrics and recovery always use the binary's.
        """
        wanted = validation.state(None if state is None else str(state))
        statuses = self.snapshot(binary, host, topic, availability_zone, down_time).statuses
        if wanted is None:
            return statuses
        return [s for s in statuses if s.state == wanted]

    def snapshot(
        self,
        binary: str | None = None,
        host: str | None = None,
        topic: str | None = None,
        availability_zone: str | None = None,
        down_time: float | None = None,
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
            down_time=validation.down_time(down_time),
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

    def keep_pruned(self, cache: IdentityCache[Any]) -> None:
        """Prune a caller's table of services with this group's own (identity_cache.py).

        A read of every live service then drops the services it no longer
        finds from `cache` too, and delete() the deleted one at once.
        """
        with self._lock:
            self._other_caches.append(cache)

    def _identity_caches(self) -> list[IdentityCache[Any]]:
        """Every table of identity_cache.py this group prunes, the driver's included."""
        return [
            self._reuse.cache,
            self._statuses.cache,
            *self.driver.identity_caches,
            *self._other_caches,
        ]

    def _keep_only(self, live: Collection[str]) -> None:
        """Drop what is remembered of services not in `live`, a read of every live one."""
        for cache in self._identity_caches():
            cache.keep_only(live)

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
        limit: int = event_log.MAX_PAGE,
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
        self, since: int, binary: str | None, host: str | None, limit: int = event_log.MAX_PAGE
    ) -> EventBatch:
        """One read of the stream, inputs already validated."""
        with sql_errors():
            found = event_log.read(self.engine, since, binary, host, limit)
        return EventBatch(found, found[-1].id if found else since)

    def last_event_id(self) -> int:
        """The newest event's id (0 when none): `since` for "only what happens from now on",
        or, less a few, for the last few events (the status page's recent events)."""
        with sql_errors():
            return event_log.last_id(self.engine)

    @property
    def event_poll_interval(self) -> float:
        interval: float = self.conf.events.sweep_interval
        return min(0.2, interval / 2)

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

    # -- claims ----------------------------------------------------------------
    # In-flight work tied to its owner's liveness (doc/claims.md). A token is
    # a Claim; fence(claim) in claims.py guards the caller's own writes.

    def claim(
        self,
        service: Service | str,
        resource_type: str,
        resource_id: str,
        operation: str,
        details: dict[str, Any] | None = None,
        *,
        incarnation: str | None = None,
    ) -> Claim:
        """Claim a resource for `service`; ClaimHeld (naming the holder) if it is taken.

        `incarnation` defaults to this ServiceGroup's; the HTTP layer passes
        the calling process's own.
        """
        owner = validation.service_id(self._uuid_of(service), "service_id")
        resource_type = validation.kind("resource_type", resource_type)
        resource_id = validation.resource_id(resource_id)
        operation = validation.kind("operation", operation)
        encoded = validation.details(details)
        incarnation = self._incarnation(incarnation)
        records.get(self.engine, owner)  # NotFound for an unknown or deleted owner
        with sql_errors():
            return claim_rows.acquire(
                self.engine, resource_type, resource_id, operation, owner, incarnation, encoded
            )

    def renew(
        self,
        claim: Claim,
        details: dict[str, Any] | None = _UNSET,
        *,
        incarnation: str | None = None,
    ) -> Claim:
        """Say the work is progressing (and optionally replace details); ClaimLost if stale.

        Only the incarnation that made the claim may renew it (`incarnation`
        defaults to this ServiceGroup's): a restarted process cannot pick up
        its former self's tokens from lost_claims().
        """
        self._check_token(claim, incarnation)
        encoded = None if details is _UNSET else validation.details(details)
        with sql_errors():
            return claim_rows.renew(self.engine, claim, encoded, details is not _UNSET)

    def release(self, claim: Claim, *, incarnation: str | None = None) -> Claim:
        """Free the resource: the work is done. ClaimLost if the token is stale."""
        self._check_token(claim, incarnation)
        with sql_errors():
            return claim_rows.release(self.engine, claim)

    def is_current(self, claim: Claim) -> bool:
        """Whether the token still holds. Racy by nature: fence writes with fence(claim)."""
        claim = as_token(claim)
        with sql_errors():
            return claim_rows.is_current(self.engine, claim)

    def get_claim(self, resource_type: str, resource_id: str) -> Claim:
        resource_type = validation.kind("resource_type", resource_type)
        resource_id = validation.resource_id(resource_id)
        with sql_errors():
            return claim_rows.get(self.engine, resource_type, resource_id)

    def list_claims(
        self,
        owner: Service | str | None = None,
        resource_type: str | None = None,
        state: str | None = None,
    ) -> list[Claim]:
        if owner is not None:
            owner = validation.service_id(self._uuid_of(owner), "owner")
        if resource_type is not None:
            resource_type = validation.kind("resource_type", resource_type)
        state = validation.claim_state(state)
        with sql_errors():
            return claim_rows.find(self.engine, owner, resource_type, state)

    def force_release(self, resource_type: str, resource_id: str, reason: str) -> Claim:
        """Operator override: free a live claim whoever holds it, bump the epoch, audit it."""
        resource_type = validation.kind("resource_type", resource_type)
        resource_id = validation.resource_id(resource_id)
        reason = validation.reason(reason, "reason") or ""
        with sql_errors():
            return claim_rows.force_release(self.engine, resource_type, resource_id, reason)

    def lost_claims(self, service: Service | str, incarnation: str | None = None) -> list[Claim]:
        """Claims this service held in a previous incarnation and did not release itself.

        NotFound for an unknown or deleted service, as claim(): over HTTP this
        is a sub-resource of the service, and a deleted service's own has to go
        with it (its claims stay listed by list_claims(owner=)).
        """
        owner = validation.service_id(self._uuid_of(service), "service_id")
        incarnation = self._incarnation(incarnation)
        records.get(self.engine, owner)  # NotFound for an unknown or deleted service
        with sql_errors():
            return claim_rows.lost_of(self.engine, owner, incarnation)

    def _incarnation(self, given: str | None) -> str:
        """This process's own incarnation unless another is named; "" is not "none given"."""
        return validation.incarnation(self.incarnation if given is None else given)

    def _check_token(self, claim: Any, incarnation: str | None) -> None:
        claim = as_token(claim)
        mine = self._incarnation(incarnation)
        if claim.incarnation != mine:
            with sql_errors():
                current = claim_rows.find_one(self.engine, *claim.key)
            raise claim_rows.lost(claim, current, "it was made by another incarnation")

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
        down_time: float | None = None,
        **page_and_filters: Any,
    ) -> Snapshot:
        """One read, every caller's: the records (one SELECT), their liveness (one
        driver read), the state rule (state.py), then the statuses.

        Unchanged records and statuses come back as the same objects
        (identity_cache.py); an unreadable liveness backend makes every
        state unknown, and the outage it was is excused afterwards (outage.py).
        """
        try:
            recordset = records.query(
                self.engine, uuids=uuids, reuse=self._reuse, **page_and_filters
            )
        except BackendError:
            # With the db driver the records are the liveness store.
            self._outages.seen()
            raise
        if not recordset.services:
            return Snapshot([], liveness_ok=True)
        return self._judged(recordset, read or self.driver.read, down_time)

    def _judged(
        self,
        recordset: records.RecordSet,
        read: Callable[[records.RecordSet], Reading],
        down_time: float | None = None,
    ) -> Snapshot:
        """The records' liveness (one driver read), the state rule (state.py), the statuses.

        With a query's own `down_time`, the statuses are built afresh and not
        remembered (StatusReuse): the shared table, and every cache keyed on
        its statuses' identity (server/status_json.py), hold only statuses
        judged by each binary's own down time.
        """
        missing = NEVER
        try:
            with self._driver_call():
                reading: Reading = read(recordset)
        except BackendError as exc:
            # The records are fine; only liveness cannot be read. Say so
            # ("unknown") rather than calling a healthy fleet down.
            self._read_failures.failed(exc.backend, exc)
            self._outages.seen()
            reading, missing = Reading(None, {}), UNKNOWN
        else:
            self._read_failures.ended(self.driver.backend)
        outage = None if missing is UNKNOWN else self._outages.ago()
        services, pulses = recordset.services, reading.pulses
        with gcpause.paused():  # building, no I/O: see gcpause.py
            if down_time is None:
                states = judge_all(
                    services,
                    pulses,
                    missing,
                    reading.now,
                    self.down_time,
                    outage,
                    self.times.down_times,
                )
                statuses = self._statuses.build(services, states, pulses, missing)
            else:
                states = judge_all(services, pulses, missing, reading.now, down_time, outage)
                get = pulses.get
                statuses = [
                    new_status(service, state, get(service.uuid, missing).last_heartbeat)
                    for service, state in zip(services, states, strict=True)
                ]
        return Snapshot(statuses, liveness_ok=missing is NEVER, read_at=reading.now)

    @staticmethod
    def _uuid_of(service: ServiceRef) -> str:
        """The uuid of a Service, or the string given, unvalidated: the caller names the field."""
        return service.uuid if isinstance(service, Service) else service

    def _uuid(self, service: ServiceRef) -> str:
        if isinstance(service, Service):
            return service.uuid
        return validation.service_id(service)

    def _record(self, service: ServiceRef) -> Service:
        return records.get(self.engine, self._uuid(service))

    def _driver_call(self) -> DriverErrors:
        return self._driver_errors
