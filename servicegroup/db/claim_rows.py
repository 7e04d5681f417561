"""Every query on the claims table.

Why one row per resource, for ever
    The epoch is the fencing token: it rises on every acquire and every
    takeover, and a writer fences on "epoch is still N". If a finished claim's
    row were deleted, the next acquire would start again at epoch 1 and a
    zombie holding epoch 1 of an earlier generation would pass the fence (the
    ABA problem). So a released claim keeps its row (state "released"), and
    the `delete` recovery policy leaves a tombstone (state "deleted"): hidden
    from get/list, but its epoch is still there to be bumped. Rows are never
    pruned; they are small, one per resource ever claimed.

Why every write is a single compare-and-set
    acquire: an UPDATE ... WHERE state is free, then (no row) an INSERT that
    races on the unique (resource_type, resource_id) key; renew/release: an
    UPDATE ... WHERE epoch = N AND owner AND incarnation AND state = held;
    takeovers: an UPDATE ... WHERE epoch = N AND state = the state we saw.
    Row locks (PostgreSQL, InnoDB) or the one writer lock (SQLite) serialize
    the statements, and each re-checks its WHERE on the latest row, so of
    racing writers exactly one matches; the others see rowcount 0 and nothing
    changes. No SELECT ... FOR UPDATE, no read-modify-write in Python.

Lock order, shared with db/event_log.py: lease -> event_sequence -> services ->
claims. Owner writes (acquire, renew, release) touch only claims.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql.elements import ColumnElement

from servicegroup.clock import as_utc
from servicegroup.db import event_log
from servicegroup.db.engine import is_deadlock, writing
from servicegroup.db.models import claims, server_now, services
from servicegroup.exceptions import ClaimHeld, ClaimLost, NotFound
from servicegroup.service import rfc3339

HELD = "held"
RECOVERING = "recovering"  # taken over by recovery; its hook works under the new epoch
RELEASED = "released"
DELETED = "deleted"  # tombstone of the `delete` policy: hidden, epoch kept
LIVE = (HELD, RECOVERING)  # a fence passes only in these states
FREE = (RELEASED, DELETED)
ACQUIRE_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Claim:
    """A claim, and the token its holder keeps: (resource, owner, incarnation, epoch)."""

    resource_type: str
    resource_id: str
    operation: str
    owner: str  # the service uuid that holds (or last held) the claim
    incarnation: str  # the owner's process start that holds it
    epoch: int
    state: str
    claimed_at: datetime
    updated_at: datetime
    details: dict[str, Any] | None = None
    reason: str | None = None  # why it left its owner, once it has
    attempts: int = 0  # recovery hook runs so far
    retry_at: datetime | None = None
    owner_host: str | None = None
    owner_binary: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.resource_type, self.resource_id

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of a claim: HTTP, CLI and recovery hooks all use it."""
        return {
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "operation": self.operation,
            "owner": self.owner,
            "owner_host": self.owner_host,
            "owner_binary": self.owner_binary,
            "incarnation": self.incarnation,
            "epoch": self.epoch,
            "state": self.state,
            "claimed_at": rfc3339(self.claimed_at),
            "updated_at": rfc3339(self.updated_at),
            "details": self.details,
            "reason": self.reason,
            "attempts": self.attempts,
            "retry_at": rfc3339(self.retry_at),
        }

    def describe(self) -> str:
        who = f"{self.owner_binary or '?'} on {self.owner_host or '?'} (service {self.owner})"
        return (
            f"{self.operation} by {who} since {rfc3339(self.claimed_at)}, "
            f"epoch {self.epoch}, state {self.state}"
        )


def _select() -> Any:
    return select(
        claims,
        services.c.host.label("owner_host"),
        services.c.binary.label("owner_binary"),
        services.c.observed_state.label("owner_state"),
        services.c.observed_at.label("owner_observed_at"),
        services.c.forced_down.label("owner_forced_down"),
        services.c.deleted.label("owner_deleted"),
    ).select_from(claims.outerjoin(services, services.c.uuid == claims.c.owner))


def to_claim(row: Any) -> Claim:
    m = row._mapping
    return Claim(
        resource_type=m["resource_type"],
        resource_id=m["resource_id"],
        operation=m["operation"],
        owner=m["owner"],
        incarnation=m["incarnation"],
        epoch=m["epoch"],
        state=m["state"],
        claimed_at=as_utc(m["claimed_at"]),
        updated_at=as_utc(m["updated_at"]),
        details=None if m["details"] is None else json.loads(m["details"]),
        reason=m["reason"],
        attempts=m["attempts"],
        retry_at=as_utc(m["retry_at"]),
        owner_host=m.get("owner_host"),
        owner_binary=m.get("owner_binary"),
    )


def _key(resource_type: str, resource_id: str) -> ColumnElement[bool]:
    return (claims.c.resource_type == resource_type) & (claims.c.resource_id == resource_id)


def _read(conn: Connection, resource_type: str, resource_id: str) -> Any:
    return conn.execute(_select().where(_key(resource_type, resource_id))).first()


def db_now(conn: Connection) -> datetime:
    return conn.execute(select(server_now())).scalar_one()


# -- the owner's side ----------------------------------------------------------


def acquire(
    engine: Engine,
    resource_type: str,
    resource_id: str,
    operation: str,
    owner: str,
    incarnation: str,
    details: str | None,
) -> Claim:
    """Claim a free (or never claimed) resource; ClaimHeld names the live holder."""
    values = {
        "operation": operation,
        "owner": owner,
        "incarnation": incarnation,
        "state": HELD,
        "claimed_at": server_now(),
        "updated_at": server_now(),
        "details": details,
        "reason": None,
        "attempts": 0,
        "retry_at": None,
    }
    key = _key(resource_type, resource_id)
    for _ in range(ACQUIRE_ATTEMPTS):
        try:
            with writing(engine) as conn:
                taken = conn.execute(
                    update(claims)
                    .where(key & claims.c.state.in_(FREE))
                    .values(epoch=claims.c.epoch + 1, **values)
                )
                row = _read(conn, resource_type, resource_id)
        except sa_exc.OperationalError as exc:
            if not is_deadlock(exc):
                raise
            continue  # rolled back whole: nothing written, look again
        if taken.rowcount == 1:
            return to_claim(row)
        if row is not None and row._mapping["state"] in LIVE:
            raise held(to_claim(row))
        if row is None:
            try:
                with writing(engine) as conn:
                    conn.execute(
                        insert(claims).values(
                            resource_type=resource_type, resource_id=resource_id, epoch=1, **values
                        )
                    )
                    return to_claim(_read(conn, resource_type, resource_id))
            except sa_exc.IntegrityError:
                pass  # another acquirer inserted first: look again
            except sa_exc.OperationalError as exc:
                # Acquirers inserting the same key at once: InnoDB may pick
                # one as a deadlock victim instead. Same answer: look again.
                if not is_deadlock(exc):
                    raise
        # Freed or created between our two statements: try again.
    with engine.connect() as conn:
        row = _read(conn, resource_type, resource_id)
    if row is not None and row._mapping["state"] in LIVE:
        raise held(to_claim(row))
    raise ClaimHeld(None, f"{resource_type} {resource_id!r}: too much contention; retry")


def held(claim: Claim) -> ClaimHeld:
    if claim.state == RECOVERING:
        what = f"is being recovered (epoch {claim.epoch}, reason {claim.reason}) after "
        what += f"{claim.operation} by {claim.owner_binary} on {claim.owner_host}"
    else:
        what = f"is claimed: {claim.describe()}"
    return ClaimHeld(claim, f"{claim.resource_type} {claim.resource_id!r} {what}")


def _mine(claim: Claim) -> ColumnElement[bool]:
    return (
        _key(claim.resource_type, claim.resource_id)
        & (claims.c.epoch == claim.epoch)
        & (claims.c.owner == claim.owner)
        & (claims.c.incarnation == claim.incarnation)
        & (claims.c.state == HELD)
    )


def renew(engine: Engine, claim: Claim, details: str | None, set_details: bool) -> Claim:
    """Say the work goes on (moves updated_at); ClaimLost if the token is stale."""
    values: dict[str, Any] = {"updated_at": server_now()}
    if set_details:
        values["details"] = details
    return _owner_write(engine, claim, values)


def release(engine: Engine, claim: Claim) -> Claim:
    return _owner_write(engine, claim, {"state": RELEASED, "reason": "released"})


def _owner_write(engine: Engine, claim: Claim, values: dict[str, Any]) -> Claim:
    values.setdefault("updated_at", server_now())
    with writing(engine) as conn:
        done = conn.execute(update(claims).where(_mine(claim)).values(**values)).rowcount
        row = _read(conn, claim.resource_type, claim.resource_id)
    current = None if row is None else to_claim(row)
    if done != 1:
        raise lost(claim, current)
    assert current is not None
    return current


def lost(claim: Claim, current: Claim | None, why: str | None = None) -> ClaimLost:
    if why is not None:
        pass
    elif current is None or (current.state == DELETED and current.epoch == claim.epoch):
        why = "it no longer exists"
    elif current.epoch != claim.epoch:
        why = f"it is now at epoch {current.epoch} ({current.state}"
        why += f", {current.reason})" if current.reason else ")"
    elif current.state != HELD:
        why = f"it is {current.state}" + (f" ({current.reason})" if current.reason else "")
    else:
        why = "it is held by another owner or incarnation"
    return ClaimLost(
        claim,
        current,
        f"claim lost: {claim.resource_type} {claim.resource_id!r} at epoch {claim.epoch}: {why}",
    )


def is_current(engine: Engine, claim: Claim) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(select(fence(claim))).scalar())


# -- fencing an application's own writes --------------------------------------


def fence(claim: Claim) -> ColumnElement[bool]:
    """EXISTS (a live claim on this resource at this epoch), for the app's own WHERE.

    The epoch alone identifies the generation (it never repeats for a
    resource), so the holder's recovery hook, which works under a newer
    epoch in state "recovering", fences the same way.
    """
    return exists().where(
        _key(claim.resource_type, claim.resource_id)
        & (claims.c.epoch == claim.epoch)
        & claims.c.state.in_(LIVE)
    )


_FENCE_SQL = (
    "EXISTS (SELECT 1 FROM claims WHERE resource_type = {t} AND resource_id = {r} "
    "AND epoch = {e} AND state IN ('held', 'recovering'))"
)


def fence_sql(claim: Claim, paramstyle: str = "named") -> tuple[str, Any]:
    """The same condition as plain SQL, with bound parameters in the driver's style.

    named (sqlite3, SQLAlchemy text()): ``:sg_claim_type``...; qmark (sqlite3):
    ``?``; format/pyformat (psycopg, PyMySQL): ``%s`` / ``%(sg_claim_type)s``.
    """
    values = (claim.resource_type, claim.resource_id, claim.epoch)
    names = ("sg_claim_type", "sg_claim_id", "sg_claim_epoch")
    if paramstyle == "named":
        return _FENCE_SQL.format(**dict(zip("tre", (f":{n}" for n in names), strict=True))), dict(
            zip(names, values, strict=True)
        )
    if paramstyle == "pyformat":
        marks = (f"%({n})s" for n in names)
        return _FENCE_SQL.format(**dict(zip("tre", marks, strict=True))), dict(
            zip(names, values, strict=True)
        )
    if paramstyle in ("qmark", "format"):
        mark = "?" if paramstyle == "qmark" else "%s"
        return _FENCE_SQL.format(t=mark, r=mark, e=mark), values
    raise ValueError(f"unsupported paramstyle {paramstyle!r}")


# -- reading -------------------------------------------------------------------


def find_one(engine: Engine, resource_type: str, resource_id: str) -> Claim | None:
    with engine.connect() as conn:
        row = _read(conn, resource_type, resource_id)
    return None if row is None else to_claim(row)


def get(engine: Engine, resource_type: str, resource_id: str) -> Claim:
    with engine.connect() as conn:
        row = _read(conn, resource_type, resource_id)
    if row is None or row._mapping["state"] == DELETED:
        raise NotFound("claim", f"{resource_type}/{resource_id}")
    return to_claim(row)


def find(
    engine: Engine,
    owner: str | None = None,
    resource_type: str | None = None,
    state: str | None = None,
    limit: int = 1000,
) -> list[Claim]:
    stmt = _select()
    if owner is not None:
        stmt = stmt.where(claims.c.owner == owner)
    if resource_type is not None:
        stmt = stmt.where(claims.c.resource_type == resource_type)
    stmt = stmt.where(claims.c.state == state if state else claims.c.state != DELETED)
    stmt = stmt.order_by(claims.c.resource_type, claims.c.resource_id).limit(limit)
    with engine.connect() as conn:
        return [to_claim(row) for row in conn.execute(stmt)]


def lost_of(engine: Engine, owner: str, incarnation: str) -> list[Claim]:
    """Claims last owned by `owner` under another incarnation, not released by it.

    What a restarted service left behind: still held by its former self
    (recovery has not got to them yet), being recovered, or already
    recovered/force-released. None of them can be renewed: the incarnation
    (and, once recovery acted, the epoch) no longer match.
    """
    stmt = (
        _select()
        .where(
            (claims.c.owner == owner)
            & (claims.c.incarnation != incarnation)
            & or_(claims.c.reason.is_(None), claims.c.reason != "released")
        )
        .order_by(claims.c.resource_type, claims.c.resource_id)
    )
    with engine.connect() as conn:
        return [to_claim(row) for row in conn.execute(stmt)]


def stats(engine: Engine) -> tuple[list[tuple[str, str, int]], float | None]:
    """(resource_type, state, count) for live claims, and the oldest live claim's age (s)."""
    with engine.connect() as conn:
        counts = conn.execute(
            select(claims.c.resource_type, claims.c.state, func.count())
            .where(claims.c.state.in_(LIVE))
            .group_by(claims.c.resource_type, claims.c.state)
        ).all()
        oldest, now = conn.execute(
            select(func.min(claims.c.claimed_at), server_now()).where(claims.c.state.in_(LIVE))
        ).one()
    age = None if oldest is None else max(0.0, (now - oldest).total_seconds())
    return [(t, s, n) for t, s, n in counts], age


# -- takeovers: force-release and recovery --------------------------------------


def _draft(row: Any, cause: str, details: dict[str, Any]) -> event_log.Draft:
    """A claim event on the one stream, about the claim's (last) owner.

    previous == state == the owner's observed state, as for admin events
    that do not change liveness: stream readers that look for deaths are
    not misled.
    """
    m = row._mapping
    observed = m.get("owner_state") or "unknown"
    return event_log.Draft(
        m["owner"],
        m.get("owner_host") or "",
        m.get("owner_binary") or "",
        observed,
        observed,
        cause,
        {"resource_type": m["resource_type"], "resource_id": m["resource_id"], **details},
    )


def force_release(engine: Engine, resource_type: str, resource_id: str, reason: str) -> Claim:
    """Free a live claim whoever holds it, bump the epoch, and audit it as an event."""
    with writing(engine) as conn:
        # The sequence lock also serializes us with recovery; owners' writes
        # do not take it, so the UPDATE still re-checks epoch and state.
        event_log.lock_sequence(conn)
        for _ in range(ACQUIRE_ATTEMPTS):
            row = _read(conn, resource_type, resource_id)
            if row is None or row._mapping["state"] == DELETED:
                raise NotFound("claim", f"{resource_type}/{resource_id}")
            m = row._mapping
            if m["state"] not in LIVE:
                return to_claim(row)  # already free: nothing to take, nothing to audit
            done = conn.execute(
                update(claims)
                .where(
                    _key(resource_type, resource_id)
                    & (claims.c.epoch == m["epoch"])
                    & claims.c.state.in_(LIVE)
                )
                .values(
                    epoch=claims.c.epoch + 1,
                    state=RELEASED,
                    reason=f"force_released: {reason}" if reason else "force_released",
                    updated_at=server_now(),
                    retry_at=None,
                )
            ).rowcount
            if done != 1:
                continue  # the owner released or re-acquired meanwhile: look again
            details = {
                "operation": m["operation"],
                "previous_state": m["state"],
                "previous_epoch": m["epoch"],
                "epoch": m["epoch"] + 1,
                "incarnation": m["incarnation"],
                "reason": reason,
            }
            event_log.append(conn, [_draft(row, "claim_force_released", details)])
            return to_claim(_read(conn, resource_type, resource_id))
    raise ClaimHeld(None, f"{resource_type} {resource_id!r}: too much contention; retry")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A held claim with what recovery needs to judge it, read in one SELECT."""

    claim: Claim
    owner_state: str | None
    owner_observed_at: datetime | None
    owner_forced_down: bool
    owner_deleted: bool
    claimed_at_raw: datetime
    updated_at_raw: datetime


def candidates(conn: Connection, stale_before: datetime | None) -> list[Candidate]:
    """Held claims whose owner is observed down, or gone, or (maybe) overdue.

    `stale_before`: updated_at older than this may be past its operation's
    max_duration (the caller checks each operation's own limit).
    """
    gone = services.c.uuid.is_(None) | (services.c.deleted != 0)
    owner_down = (services.c.observed_state == "down") & (
        services.c.observed_at >= claims.c.claimed_at
    )
    wanted = or_(gone, owner_down)
    if stale_before is not None:
        wanted = or_(wanted, claims.c.updated_at < stale_before)
    rows = conn.execute(_select().where((claims.c.state == HELD) & wanted)).all()
    found = []
    for row in rows:
        m = row._mapping
        found.append(
            Candidate(
                to_claim(row),
                m["owner_state"],
                m["owner_observed_at"],
                bool(m["owner_forced_down"]),
                m["owner_host"] is None or bool(m["owner_deleted"]),
                m["claimed_at"],
                m["updated_at"],
            )
        )
    return found


def revoke(
    conn: Connection,
    candidate: Candidate,
    reason: str,
    retry_at: datetime,
    stale_before: datetime | None,
    recovered_by: str,
) -> Claim | None:
    """Take a held claim from its owner: epoch + 1, state recovering; None if it moved.

    For max_duration the claim must still be stale: a renewal that commits
    first wins.
    """
    claim = candidate.claim
    where = (
        _key(*claim.key)
        & (claims.c.epoch == claim.epoch)
        & (claims.c.state == HELD)
        & (claims.c.owner == claim.owner)
        & (claims.c.incarnation == claim.incarnation)
    )
    if stale_before is not None:
        where &= claims.c.updated_at < stale_before
    done = conn.execute(
        update(claims)
        .where(where)
        .values(
            epoch=claims.c.epoch + 1,
            state=RECOVERING,
            reason=reason,
            attempts=0,
            retry_at=retry_at,
            updated_at=server_now(),
        )
    ).rowcount
    if done != 1:
        return None
    row = _read(conn, *claim.key)
    details = {
        "operation": claim.operation,
        "previous_epoch": claim.epoch,
        "epoch": claim.epoch + 1,
        "incarnation": claim.incarnation,
        "reason": reason,
        "recover_at": rfc3339(as_utc(retry_at)),
        "recovered_by": recovered_by,
    }
    event_log.append(conn, [_draft(row, "claim_revoked", details)])
    return to_claim(row)


def due(conn: Connection, now: datetime) -> list[Claim]:
    """Claims in recovery whose grace or back-off is over."""
    stmt = _select().where((claims.c.state == RECOVERING) & (claims.c.retry_at <= now))
    return [to_claim(row) for row in conn.execute(stmt.order_by(claims.c.retry_at))]


def _recovering(claim: Claim) -> ColumnElement[bool]:
    return _key(*claim.key) & (claims.c.epoch == claim.epoch) & (claims.c.state == RECOVERING)


def finish(conn: Connection, claim: Claim, state: str, cause: str, details: dict[str, Any]) -> bool:
    """Recovery done: released (or a tombstone), if still at the epoch recovery holds."""
    done = conn.execute(
        update(claims)
        .where(_recovering(claim))
        .values(state=state, retry_at=None, updated_at=server_now())
    ).rowcount
    if done == 1:
        row = _read(conn, *claim.key)
        event_log.append(conn, [_draft(row, cause, {"epoch": claim.epoch, **details})])
    return done == 1


def start_attempt(conn: Connection, claim: Claim, busy_until: datetime) -> Claim | None:
    """Take the claim for one hook run: epoch + 1, so an earlier run cannot write."""
    done = conn.execute(
        update(claims)
        .where(_recovering(claim))
        .values(
            epoch=claims.c.epoch + 1,
            attempts=claims.c.attempts + 1,
            retry_at=busy_until,
            updated_at=server_now(),
        )
    ).rowcount
    return to_claim(_read(conn, *claim.key)) if done == 1 else None


def attempt_failed(
    conn: Connection, claim: Claim, retry_at: datetime, details: dict[str, Any]
) -> bool:
    """Record a failed hook run and when to try again; False if the claim moved on."""
    done = conn.execute(
        update(claims).where(_recovering(claim)).values(retry_at=retry_at, updated_at=server_now())
    ).rowcount
    row = _read(conn, *claim.key)
    if row is not None:
        cause = "claim_recovery_failed"
        event_log.append(
            conn, [_draft(row, cause, {"epoch": claim.epoch, "superseded": done != 1, **details})]
        )
    return done == 1


def stale_cutoff(now: datetime, seconds: float) -> datetime:
    return now - timedelta(seconds=seconds)
