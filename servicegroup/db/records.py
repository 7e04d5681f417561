"""Every query on the services table, for every driver.

The table holds records (who exists); whether a service is alive belongs to
the liveness driver. The db driver's own heartbeat UPDATE lives in
drivers/db.py, because it is liveness, not a record change.
"""

from __future__ import annotations

import dataclasses
import operator
import sys
import uuid as uuid_mod
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Select,
    String,
    bindparam,
    column,
    func,
    insert,
    select,
    tuple_,
    update,
    values,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql

from servicegroup import gcpause
from servicegroup.backend_errors import sql_errors
from servicegroup.db import event_log
from servicegroup.db.engine import is_deadlock, writing
from servicegroup.db.models import server_now, services
from servicegroup.exceptions import NotFound
from servicegroup.identity_cache import IdentityCache
from servicegroup.service import Registration, Service, new_service

FILTERS = ("binary", "host", "topic", "availability_zone")


@dataclass(frozen=True, slots=True)
class RecordSet:
    services: list[Service]
    # The SQL server's clock, read in the same SELECT; the db driver judges
    # ages against it. None when the SELECT returned no row.
    db_now: datetime | None


_COLUMNS = [c.name for c in services.columns]
_AT = {name: _COLUMNS.index(name) for name in _COLUMNS}
# Service's fields, picked from a row of select(services, ...) by position in one C call.
_pick = operator.itemgetter(*(_AT[f.name] for f in dataclasses.fields(Service)))
# What query() selects, before the server's clock: exactly Service's fields in
# their order, so row[:-1] is what a Service is built from (a C slice).
_SERVICE_COLUMNS = [services.c[f.name] for f in dataclasses.fields(Service)]
_READ_COLUMNS = [*_SERVICE_COLUMNS, server_now().label("db_now")]
_fromisoformat = datetime.fromisoformat
_combine = datetime.combine
_intern = sys.intern


def _utc(value: Any) -> datetime | None:
    """A stored timestamp as an aware UTC datetime, from a SQLAlchemy row or a raw one.

    Raw DBAPI rows carry SQLite's stored text (fromisoformat with an explicit
    offset is one C call) or a driver's naive datetime; combine() attaches
    UTC several times faster than datetime.replace(tzinfo=...).
    """
    if value is None:
        return None
    if value.__class__ is str:
        return _fromisoformat(value + "+00:00")
    stamp: datetime = value
    if stamp.tzinfo is None:
        return _combine(stamp.date(), stamp.time(), UTC)
    return stamp.astimezone(UTC)


def to_service(row: Row[Any] | Sequence[Any]) -> Service:
    """A Service from a row of select(services, ...), processed by SQLAlchemy or raw DBAPI."""
    return _service(_pick(row))


def _service(fields: Sequence[Any]) -> Service:
    """A Service from its fields as stored, converting the few typed ones."""
    (
        uuid,
        host,
        binary,
        topic,
        availability_zone,
        version,
        report_count,
        disabled,
        disabled_reason,
        forced_down,
        last_seen_up,
        created_at,
        updated_at,
        deleted,
        deleted_at,
        observed_state,
    ) = fields
    return new_service(
        uuid,
        host,
        binary,
        topic,
        availability_zone,
        version,
        report_count,
        bool(disabled),
        disabled_reason,
        bool(forced_down),
        _utc(last_seen_up),
        _utc(created_at),
        _utc(updated_at),
        bool(deleted),
        _utc(deleted_at),
        observed_state,
    )


def _shared(name: str | None) -> str | None:
    return None if name is None else _intern(name)


def _built(fields: Sequence[Any]) -> tuple[tuple[Any, ...], Service]:
    """A Service from its fields as stored, and those fields as Reuse keeps them.

    The DBAPI hands out a new string per row, even for the names that
    repeat on every row (a binary, a topic, a zone, a state), and Reuse
    keeps a row's fields for as long as the service lives. Both the Service
    and the kept fields hold one shared (interned) string per distinct
    name instead. Measured at 100,000 services on PostgreSQL, the daemon
    through bench/fleet.py's steps (registration aside): RSS after the
    list and the scrapes 406.6-414.0 MB (three runs) -> 364.2-373.3 MB, the
    driver's row values held 58-69 MB (tracemalloc).
    """
    kept = (
        *fields[:2],
        _intern(fields[2]),  # binary
        _shared(fields[3]),  # topic
        _shared(fields[4]),  # availability_zone
        *fields[5:15],
        _shared(fields[15]),  # observed_state
    )
    return kept, _service(kept)


class Reuse:
    """The Services of the last reads, handed out again while their row is unchanged.

    Services are immutable, so a row read again with equal values may get the
    same object back: comparing the row with the one its Service was built
    from is one C-level tuple comparison, a fraction of converting the row
    and building a new Service. Between reads most rows are unchanged: with
    the db driver only services that beat since (their liveness columns),
    with the others only admin changes. Never stale: a Service is reused
    only for a row equal to its source, so any changed column builds anew.

    One table, uuid -> (the row's fields, Service), for every read whatever
    its filters or slice: a row is the same row whichever query found it
    (kept per filter, a daemon held a copy of the fleet for each). Its
    bound and its pruning are identity_cache.py's.
    """

    def __init__(self) -> None:
        self.cache: IdentityCache[tuple[Any, Service]] = IdentityCache()

    def services(self, rows: Sequence[Any]) -> list[Service]:
        """Services for query()'s rows (Service's fields, then the server's clock)."""
        known = self.cache.for_read()
        found: list[Service] = []
        get, append, build = known.get, found.append, _built
        for row in rows:
            fields = row[:-1]  # the clock differs on every read
            entry = get(fields[0])
            if entry is None or entry[0] != fields:
                entry = known[fields[0]] = build(fields)
            append(entry[1])
        return found


_live = services.c.deleted == 0
T = TypeVar("T")
# Rows a read converts at a time (query()).
FETCH_CHUNK = 5000
# Uuids per SELECT of get_many: well under SQLite's 32,766 bound parameters.
GET_MANY_CHUNK = 1000


# Rows per statement of a registration batch: under every dialect's limit on
# bound parameters (SQLite's 32,766) with the widest row.
REGISTER_CHUNK = 500
# A batch that lost a race (the unique constraint, or an InnoDB deadlock
# between inserters of the same name) is rolled back whole and run again.
REGISTER_ATTEMPTS = 3
_NAME = tuple_(services.c.host, services.c.binary)
_REGISTERED_FIELDS = ("topic", "availability_zone", "version")


@dataclass(frozen=True, slots=True)
class Registered:
    """What a registration batch wrote, as its own transaction saw it."""

    # Each registration's record, and whether the registration created it.
    answers: list[tuple[Service, bool]]
    # The uuids of the rows this batch inserted: new uuids, so never beaten.
    inserted: frozenset[str]
    # The SQL server's clock in that transaction, as a RecordSet has it.
    db_now: datetime | None


def register_many(
    engine: Engine,
    registrations: Sequence[Registration],
    reuse: Reuse | None = None,
    expect_new: bool = False,
) -> Registered:
    """Insert or update the live record of each (host, binary); True for each new one.

    One transaction for the whole batch, so a fleet's cold start costs a few
    statements per batch, not five per service: a SELECT of the rows that
    exist, one INSERT of the new ones, then their "registered" events (one
    append, so id order is still commit order), an UPDATE only for a
    restart that changed a field, and a SELECT back of the rows the INSERT
    did not return (all of them on MariaDB before 10.5). All or nothing.

    A restarted service keeps its uuid, and a field it leaves out (None)
    keeps its value. The same (host, binary) twice in one batch is a
    registration and then a restart; both get the final record. A batch that
    races another process for the same name meets it at the unique
    constraint (or, on InnoDB, as a deadlock victim); it is rolled back whole
    and runs again, and then finds the row.

    The records come back with the server's clock, in query()'s row shape,
    so that with `reuse` they are the Services later reads hand out, and a
    caller can judge their states with no read after the write
    (ServiceGroup.register_statuses).

    `expect_new` says the batch is likely new names (a cold start): on
    PostgreSQL they are then inserted first, `ON CONFLICT DO NOTHING`, and
    only the names that were there are looked up, one statement fewer for
    new names and one more for known ones. Either way the answers are the
    same. New registrations through the daemon on a new database: 2,090-2,144/s
    against 475-533/s looking up first (doc/benchmarks.md); for known names
    the INSERT is wasted, hence the hint rather than always.
    """
    if not registrations:
        return Registered([], frozenset(), None)
    with sql_errors():
        for attempt in range(1, REGISTER_ATTEMPTS + 1):
            try:
                with writing(engine) as conn:
                    rows, uuids, created, inserted = _register_batch(
                        conn, registrations, expect_new
                    )
                break
            except sa_exc.IntegrityError:
                if attempt == REGISTER_ATTEMPTS:
                    raise
            except sa_exc.OperationalError as exc:
                if attempt == REGISTER_ATTEMPTS or not is_deadlock(exc):
                    raise
    # Only once committed: the Services of rows that rolled back are no one's.
    by_uuid = {service.uuid: service for service in (reuse or Reuse()).services(rows)}
    answers = [(by_uuid[uuid], is_new) for uuid, is_new in zip(uuids, created, strict=True)]
    return Registered(answers, inserted, _utc(rows[-1][-1]))


def _register_batch(
    conn: Connection, registrations: Sequence[Registration], expect_new: bool
) -> tuple[list[Any], list[str], list[bool], frozenset[str]]:
    """The rows the batch leaves (query()'s shape), each registration's uuid and
    whether it created the row, and the uuids inserted."""
    names = list(dict.fromkeys((r.host, r.binary) for r in registrations))
    rows: list[Any] = []  # query()'s shape: Service's fields, then the server's clock
    drafts: dict[tuple[str, str], dict[str, Any]] = {}
    if expect_new and conn.dialect.name == "postgresql":
        # A cold start's names are new: insert them all first, and look up
        # only the ones that were there (restarts), one statement instead of two.
        drafts, _ = _merge(registrations, {}, {})
        rows += _insert_new(conn, [drafts[name] for name in names], only_absent=True)
        drafts = {(row.host, row.binary): drafts[(row.host, row.binary)] for row in rows}
    stored: dict[tuple[str, str], dict[str, Any]] = {}
    columns = [services.c[k] for k in ("uuid", "host", "binary", *_REGISTERED_FIELDS)]
    for names_chunk in _chunks([name for name in names if name not in drafts], REGISTER_CHUNK):
        for row in conn.execute(_named(conn, columns, names_chunk)):
            fields = dict(row._mapping)
            stored[(fields["host"], fields["binary"])] = fields
    wanted, created = _merge(registrations, stored, drafts)
    new = [wanted[name] for name in names if name not in stored]
    if new:
        early = _uuids(rows)
        rows += _insert_new(conn, [record for record in new if record["uuid"] not in early])
        # The registrations and their events commit together (db/event_log.py).
        # The append takes the append lock after the INSERT: the new rows are
        # this transaction's own, so no appender can wait on them, and the lock
        # that serializes every appender is not held while they are written.
        event_log.append(
            conn,
            [
                event_log.Draft(r["uuid"], r["host"], r["binary"], None, "down", "registered")
                for r in new
            ],
        )
    _update_restarted(conn, stored, wanted)
    returned = _uuids(rows)
    unread = [wanted[name]["uuid"] for name in names]
    unread = [uuid for uuid in unread if uuid not in returned]
    for uuids_chunk in _chunks(unread, REGISTER_CHUNK):
        rows += conn.execute(select(*_READ_COLUMNS).where(services.c.uuid.in_(uuids_chunk)))
    uuids = [wanted[(reg.host, reg.binary)]["uuid"] for reg in registrations]
    return rows, uuids, created, frozenset(r["uuid"] for r in new)


def _uuids(rows: list[Any]) -> set[str]:
    return {row[0] for row in rows}


def _merge(
    registrations: Sequence[Registration],
    stored: dict[tuple[str, str], dict[str, Any]],
    drafts: dict[tuple[str, str], dict[str, Any]],
) -> tuple[dict[tuple[str, str], dict[str, Any]], list[bool]]:
    """What each name's record must become, and whether each registration created it.

    A stored name's record is its row with the fields given; any other name
    is new: its draft if it has one (the record it was inserted with), else
    a new uuid. A field left out (None) keeps its value; the same name twice
    is a registration, then a restart.
    """
    wanted = {name: dict(fields) for name, fields in stored.items()}
    created: list[bool] = []
    for reg in registrations:
        name = (reg.host, reg.binary)
        record = wanted.get(name)
        if record is None:
            record = wanted[name] = dict(drafts[name]) if name in drafts else {}
            if not record:
                record.update(uuid=str(uuid_mod.uuid4()), host=reg.host, binary=reg.binary)
                record.update(topic=None, availability_zone=None)
            created.append(True)
        else:
            created.append(False)
        given = {"version": reg.version, "topic": reg.topic}
        given["availability_zone"] = reg.availability_zone
        record.update((k, v) for k, v in given.items() if v is not None)
    return wanted, created


def _insert_new(
    conn: Connection, new: list[dict[str, Any]], only_absent: bool = False
) -> list[Any]:
    """Insert never-seen names, down as judge() says of a service that never beat; their
    rows in query()'s shape where the dialect returns them from the INSERT.

    In name order: two batches that insert some of the same names (one
    service registering through two daemons at once) then meet at the
    first of them, and one waits for the other instead of deadlocking.

    `only_absent` (PostgreSQL): ON CONFLICT DO NOTHING on the (host, binary,
    deleted) key, and only the rows inserted come back. A name that is there
    already, or that a concurrent batch inserts first (this one waits for it
    to commit), is left to the caller's lookup, as a restart.
    """
    stmt = insert(services)
    if only_absent:
        stmt = postgresql.insert(services).on_conflict_do_nothing(
            index_elements=["host", "binary", "deleted"]
        )
    stmt = stmt.values(created_at=server_now(), observed_state="down", observed_at=server_now())
    returning = conn.dialect.insert_returning
    if only_absent:  # fewer rows than parameters: no order to sort them by
        stmt = stmt.returning(*_READ_COLUMNS)
    elif returning:  # the new rows come back from the INSERT: no SELECT of them after
        stmt = stmt.returning(*_READ_COLUMNS, sort_by_parameter_order=True)
    rows: list[Any] = []
    ordered = sorted(new, key=lambda r: (r["host"], r["binary"]))
    for rows_chunk in _chunks(ordered, REGISTER_CHUNK):
        inserted = conn.execute(stmt, rows_chunk)
        if returning:
            rows += inserted
    return rows


def _named(conn: Connection, columns: list[Any], names: Sequence[tuple[str, str]]) -> Select[Any]:
    """The live rows of these (host, binary) names, by the unique index whatever the statistics.

    On PostgreSQL, a join with the names as VALUES: it is planned as one
    probe of the (host, binary, deleted) index per name. `(host, binary)
    IN (...)` on a table without statistics (a new deployment before its
    first autoanalyze) went through the binary index and filtered every
    row: 8-10 ms a batch at 20,000 rows, against 0.3 ms (EXPLAIN ANALYZE).
    """
    if conn.dialect.name != "postgresql":
        return select(*columns).where(_NAME.in_(names) & _live)
    given = values(column("host", String), column("binary", String), name="names").data(names)
    on = (services.c.host == given.c.host) & (services.c.binary == given.c.binary)
    return select(*columns).select_from(given.join(services, on)).where(_live)


def _update_restarted(
    conn: Connection,
    stored: dict[tuple[str, str], dict[str, Any]],
    wanted: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """One executemany per set of changed fields (a rolling upgrade changes only version)."""
    by_fields: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for name, before in stored.items():
        after = wanted[name]
        changed = tuple(k for k in _REGISTERED_FIELDS if after[k] != before[k])
        if changed:
            params = {f"new_{k}": after[k] for k in changed}
            by_fields.setdefault(changed, []).append({"row_uuid": after["uuid"], **params})
    for changed, rows in by_fields.items():
        stmt = (
            update(services)
            .where(services.c.uuid == bindparam("row_uuid"))
            .values({**{k: bindparam(f"new_{k}") for k in changed}, "updated_at": server_now()})
        )
        conn.execute(stmt, rows)


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def get(engine: Engine, uuid: str) -> Service:
    with sql_errors(), engine.connect() as conn:
        row = conn.execute(select(services).where((services.c.uuid == uuid) & _live)).first()
    if row is None:
        raise NotFound("service", uuid)
    return to_service(row)


def get_many(
    engine: Engine, uuids: Collection[str], reuse: Reuse | None = None
) -> dict[str, Service]:
    """The live records among `uuids`, by uuid, in one SELECT per GET_MANY_CHUNK uuids.

    A batch of heartbeats names its services by uuid; one SELECT each would
    undo the batch. With `reuse`, the Services are the ones every other read
    hands out (Reuse), so a cache of them holds no copies.
    """
    wanted = list(uuids)
    found: dict[str, Service] = {}
    for start in range(0, len(wanted), GET_MANY_CHUNK):
        chunk = wanted[start : start + GET_MANY_CHUNK]
        found.update((s.uuid, s) for s in query(engine, uuids=chunk, reuse=reuse).services)
    return found


def query(
    engine: Engine,
    uuids: list[str] | None = None,
    reuse: Reuse | None = None,
    *,
    after: str | None = None,
    limit: int | None = None,
    **filters: str | None,
) -> RecordSet:
    """Live records matching the filters, with the server's clock, in ONE SELECT.

    With `reuse`, unchanged rows come back as the Services earlier reads
    built for them (Reuse), whether the read is by uuid or by filter.
    With `limit`, one page in uuid order, of the uuids after `after`: how
    the sweeper reads a large fleet in slices (api.ServiceGroup.slices).
    """
    stmt = select(*_READ_COLUMNS).where(_live)
    for name in FILTERS:
        value = filters.get(name)
        if value is not None:
            stmt = stmt.where(services.c[name] == value)
    if uuids is not None:
        stmt = stmt.where(services.c.uuid.in_(uuids))
    if limit is None:
        stmt = stmt.order_by(services.c.binary, services.c.host)
    else:
        if after is not None:
            stmt = stmt.where(services.c.uuid > after)
        stmt = stmt.order_by(services.c.uuid).limit(limit)
    with sql_errors(), engine.connect() as conn:
        result = conn.execute(stmt)
        # Speed trick: the DBAPI's own tuples (CursorResult.cursor). SQLAlchemy's
        # Row and result processors (SQLite's regex datetime parser) cost more
        # than the SELECT itself; _service converts the few typed columns
        # itself. Measured at 10,000 rows (callgrind, issue 17): get_all
        # x1.15-1.20 on SQLite (10-12 ms), x1.04-1.07 on PostgreSQL (2 ms).
        # One collector pause for fetching and building (gcpause.py): the
        # row tuples are gone before the collector runs again.
        # Rows are turned into Services FETCH_CHUNK at a time: with the whole
        # result fetched first, a read of 100,000 rows held every row's
        # tuple, strings and datetimes next to the Services being built.
        found: list[Service] = []
        db_now = None
        cursor = result.cursor
        with gcpause.paused():
            while rows := cursor.fetchmany(FETCH_CHUNK):
                if db_now is None:
                    db_now = _utc(rows[0][-1])
                if reuse is None:
                    found += [_service(r[:-1]) for r in rows]
                else:
                    found += reuse.services(rows)
            result.close()
    return RecordSet(found, db_now)


def set_fields(engine: Engine, uuid: str, **changes: Any) -> Service:
    """Apply an admin change to a live record and return it, in one transaction.

    A change of disabled or forced_down is an event, appended in the same
    transaction: readers see it at once, not at the next sweep, and never
    see an event for a change that rolled back.
    """
    where = (services.c.uuid == uuid) & _live
    with sql_errors(), writing(engine) as conn:
        flagged = "disabled" in changes or "forced_down" in changes
        if flagged:
            event_log.lock_sequence(conn)  # also serializes admin changes to these flags
        before = conn.execute(select(services).where(where)).first()
        if before is None:
            raise NotFound("service", uuid)
        conn.execute(update(services).where(where).values(updated_at=server_now(), **changes))
        if flagged:
            drafts = _admin_events(before._mapping, changes)
            if any(d.cause == "forced_down" for d in drafts):
                event_log.set_observed(conn, uuid, "down")
            event_log.append(conn, drafts)
        return to_service(conn.execute(select(services).where(where)).one())


def _admin_events(before: Any, changes: dict[str, Any]) -> list[event_log.Draft]:
    """One event per flag that really changed; the state stays what was observed.

    Only forcing down changes the state (to down, at once). Clearing it says
    nothing about liveness: the sweeper's next look emits down -> up if the
    service is beating.
    """
    observed = before["observed_state"]
    causes = {
        "disabled": ("enabled", "disabled"),
        "forced_down": ("forced_down_unset", "forced_down"),
    }
    drafts = []
    for flag, (off, on) in causes.items():
        if flag in changes and bool(changes[flag]) != bool(before[flag]):
            forcing = flag == "forced_down" and changes[flag]
            state = "down" if forcing else observed or "unknown"
            drafts.append(
                event_log.Draft(
                    before["uuid"],
                    before["host"],
                    before["binary"],
                    observed,
                    state,
                    on if changes[flag] else off,
                )
            )
    return drafts


def record_leave(engine: Engine, uuid: str) -> None:
    """A leave() as its down event, at once, like an admin action.

    leave() makes a service down before its heartbeat could expire, which no
    sweep that reads only what changed would look at (leader/schedule.py);
    so the event is written here, and the sweeper then finds the service
    down as observed. Nothing is written when it was already observed down.
    """
    where = (services.c.uuid == uuid) & _live
    columns = (services.c.host, services.c.binary, services.c.observed_state)
    with sql_errors(), writing(engine) as conn:
        event_log.lock_sequence(conn)
        before = conn.execute(select(*columns).where(where)).first()
        if before is None or before.observed_state == "down":
            return
        event_log.set_observed(conn, uuid, "down")
        if before.observed_state is not None:  # never observed: recorded silently
            draft = event_log.Draft(
                uuid, before.host, before.binary, before.observed_state, "down", "leave"
            )
            event_log.append(conn, [draft])


def soft_delete(engine: Engine, uuid: str) -> None:
    where = (services.c.uuid == uuid) & _live
    with sql_errors(), writing(engine) as conn:
        event_log.lock_sequence(conn)
        before = conn.execute(select(services).where(where)).first()
        if before is None:
            raise NotFound("service", uuid)
        m = before._mapping
        conn.execute(
            update(services)
            .where(where)
            .values(
                deleted=services.c.id,
                deleted_at=server_now(),
                observed_state="down",
                observed_at=server_now(),
            )
        )
        draft = event_log.Draft(
            uuid, m["host"], m["binary"], m["observed_state"], "down", "deleted"
        )
        event_log.append(conn, [draft])


def version_range(engine: Engine, binary: str) -> tuple[int | None, int | None]:
    """Min and max version over live, not forced-down services of a binary."""
    stmt = select(func.min(services.c.version), func.max(services.c.version)).where(
        _live & (services.c.binary == binary) & services.c.forced_down.is_(False)
    )
    with sql_errors(), engine.connect() as conn:
        low, high = conn.execute(stmt).one()
    return low, high


def ping(engine: Engine) -> None:
    with sql_errors(), engine.connect() as conn:
        conn.execute(select(1))
