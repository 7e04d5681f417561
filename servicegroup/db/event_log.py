"""The event stream in SQL, for every driver: appends, reads, pruning.

Why ids are a cursor without holes appearing later
    A reader asks for "events after id N". If two transactions could append
    concurrently, the one holding the lower id might commit after a reader
    already moved past a higher id, and that event would be skipped for good.
    So every appending transaction locks the single event_sequence row before
    it appends (`lock_sequence`: an UPDATE, which PostgreSQL and InnoDB hold
    as a row lock until commit, and SQLite turns into its one writer lock),
    and takes its ids from that row. Appends are therefore serialized: id order == commit order,
    and a reader that has seen id N can never later find a committed id < N.
    Ids come from the row rather than autoincrement because SQLite hands out
    max(rowid)+1, which goes backwards once the newest events are pruned.

    Lock order is always lease -> event_sequence -> services rows, in every
    writer (sweeper and admin actions), so appenders cannot deadlock. Rows a
    transaction inserts itself are the exception: no other transaction can
    see them, let alone wait on them, so a registration inserts its new rows
    before it takes the lock, and holds the lock only for what must follow:
    the append, a restart's UPDATE, the commit (records.register_many).

    The leader lease (leader/lease.py) comes first in that order.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, String, func, insert, literal, select, update
from sqlalchemy import exc as sa_exc

from servicegroup.clock import as_utc
from servicegroup.db.engine import writing
from servicegroup.db.models import event_sequence, server_now, service_events, services
from servicegroup.service import rfc3339

SEQUENCE = "events"
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    service_id: str
    host: str
    binary: str
    previous: str | None
    state: str
    cause: str
    time: datetime
    # Claim events only: which claim, and what happened to it (db/claim_rows.py).
    details: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of an event: HTTP, CLI, hooks and watchers all use it."""
        return {
            "id": self.id,
            "service_id": self.service_id,
            "host": self.host,
            "binary": self.binary,
            "previous": self.previous,
            "state": self.state,
            "cause": self.cause,
            "time": rfc3339(self.time),
            "details": self.details,
        }


@dataclass(frozen=True, slots=True)
class EventBatch:
    """One page of the stream, and where to continue from."""

    events: list[Event]
    # Pass it back as `since` to continue: the last id returned, or the since given.
    cursor: int


@dataclass(frozen=True, slots=True)
class Draft:
    """An event before it has an id and a time."""

    service_id: str
    host: str
    binary: str
    previous: str | None
    state: str
    cause: str
    details: dict[str, Any] | None = None


# -- the sequence ----------------------------------------------------------------


def ensure_sequence(engine: Engine) -> None:
    """Create the sequence row if someone emptied the table (the migration creates it)."""
    with engine.connect() as conn:
        if conn.execute(select(event_sequence.c.name)).first() is not None:
            return
    with contextlib.suppress(sa_exc.IntegrityError), writing(engine) as conn:
        conn.execute(insert(event_sequence).from_select(["name", "last_id"], _reseed()))


def _reseed() -> Any:
    return select(
        literal(SEQUENCE, String(32)),
        func.coalesce(func.max(service_events.c.id), 0),
    )


def lock_sequence(conn: Connection) -> None:
    """Take the append lock, before the transaction writes any row another can see."""
    stmt = (
        update(event_sequence)
        .where(event_sequence.c.name == SEQUENCE)
        .values(last_id=event_sequence.c.last_id)
    )
    if conn.execute(stmt).rowcount == 0:
        conn.execute(insert(event_sequence).from_select(["name", "last_id"], _reseed()))


def append(conn: Connection, drafts: Sequence[Draft]) -> list[int]:
    """Insert drafts with the next ids, taking the append lock if the caller has not.

    Its first statement locks the sequence row as lock_sequence() does: a
    transaction that writes no row another can see before appending needs
    no lock_sequence() of its own (a registration batch: one round trip
    fewer inside the lock).
    """
    if not drafts:
        return []
    where = event_sequence.c.name == SEQUENCE
    # Increment in SQL, then read back our own write: under MySQL's REPEATABLE
    # READ a plain SELECT would read the transaction's snapshot, which may
    # predate the lock and so miss the previous appender's ids.
    count = len(drafts)
    bump = update(event_sequence).where(where).values(last_id=event_sequence.c.last_id + count)
    if conn.dialect.update_returning:
        # PostgreSQL, SQLite: the new last id and the server's clock in the
        # same statement, two round trips fewer inside the append lock.
        bumped = bump.returning(event_sequence.c.last_id, server_now())
        row = conn.execute(bumped).first()
        if row is None:  # no sequence row (someone emptied the table): seed it
            lock_sequence(conn)
            row = conn.execute(bumped).one()
        last, now = row
    else:
        if conn.execute(bump).rowcount == 0:
            lock_sequence(conn)
            conn.execute(bump)
        last = conn.execute(select(event_sequence.c.last_id).where(where)).scalar_one()
        now = conn.execute(select(server_now())).scalar_one()
    ids = list(range(last - count + 1, last + 1))
    conn.execute(
        insert(service_events),
        [
            {
                "id": event_id,
                "service_id": d.service_id,
                "host": d.host,
                "binary": d.binary,
                "previous": d.previous,
                "state": d.state,
                "cause": d.cause,
                "created_at": now,
                "details": None if d.details is None else json.dumps(d.details),
            }
            for event_id, d in zip(ids, drafts, strict=True)
        ],
    )
    return ids


def set_observed(conn: Connection, uuid: str, state: str) -> None:
    """Write a service's observed state whatever it was: an admin action's own transition."""
    stmt = update(services).where(services.c.uuid == uuid)
    conn.execute(stmt.values(observed_state=state, observed_at=server_now()))


# Services per statement in set_observed_many: far below every dialect's
# limit on bound parameters (SQLite's is 32,766).
CAS_CHUNK = 500


def set_observed_many(conn: Connection, changes: Sequence[tuple[str, str | None, str]]) -> set[str]:
    """Compare-and-set observed states, (uuid, old, new) each; the uuids that were changed.

    A fleet's first sweep has one change per service: 9,000 single UPDATEs
    made a write transaction of seconds, during which SQLite heartbeats
    waited for its writer lock. Here each chunk is one locking SELECT and one
    UPDATE per new state. The SELECT's locks (FOR UPDATE; on SQLite the
    writer lock the transaction took) and the append lock the caller holds
    keep the rows as read until commit, so the compare is still exact.
    """
    changed: set[str] = set()
    for start in range(0, len(changes), CAS_CHUNK):
        wanted = {uuid: (old, new) for uuid, old, new in changes[start : start + CAS_CHUNK]}
        current = conn.execute(
            select(services.c.uuid, services.c.observed_state)
            .where(services.c.uuid.in_(list(wanted)))
            .with_for_update()
        ).all()
        by_new: dict[str, list[str]] = {}
        for uuid, observed in current:
            old, new = wanted[uuid]
            if observed == old:
                by_new.setdefault(new, []).append(uuid)
        for new, uuids in by_new.items():
            conn.execute(
                update(services)
                .where(services.c.uuid.in_(uuids))
                .values(observed_state=new, observed_at=server_now())
            )
            changed.update(uuids)
    return changed


# -- reading ---------------------------------------------------------------------


def read(
    engine: Engine,
    since: int = 0,
    binary: str | None = None,
    host: str | None = None,
    limit: int = MAX_PAGE,
) -> list[Event]:
    stmt = select(service_events).where(service_events.c.id > since)
    if binary is not None:
        stmt = stmt.where(service_events.c.binary == binary)
    if host is not None:
        stmt = stmt.where(service_events.c.host == host)
    stmt = stmt.order_by(service_events.c.id).limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [_event(row) for row in rows]


def touched_since(engine: Engine, since: int, ignore: Collection[str] = ()) -> tuple[int, set[str]]:
    """The services named by the events after `since` (but those of an `ignore` cause), and
    the last id read.

    For the incremental sweep (leader/schedule.py): every change of a record
    appends an event, so these are the services whose records changed.
    """
    columns = (service_events.c.id, service_events.c.service_id, service_events.c.cause)
    stmt = select(*columns).where(service_events.c.id > since).order_by(service_events.c.id)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    if not rows:
        return since, set()
    return int(rows[-1][0]), {row[1] for row in rows if row[2] not in ignore}


def last_id_expression() -> Any:
    """The newest event id, 0 for an empty stream, as a column expression."""
    return func.coalesce(func.max(service_events.c.id), 0)


def last_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(last_id_expression())).scalar_one())


def _event(row: Any) -> Event:
    m = row._mapping
    return Event(
        id=m["id"],
        service_id=m["service_id"],
        host=m["host"],
        binary=m["binary"],
        previous=m["previous"],
        state=m["state"],
        cause=m["cause"],
        time=as_utc(m["created_at"]),
        details=None if m["details"] is None else json.loads(m["details"]),
    )


def prune(engine: Engine, retention: float) -> int:
    """Delete events older than `retention` seconds on the server's clock."""
    with writing(engine) as conn:
        now = conn.execute(select(server_now())).scalar_one()
        cutoff = now - timedelta(seconds=retention)
        return conn.execute(
            service_events.delete().where(service_events.c.created_at < cutoff)
        ).rowcount
