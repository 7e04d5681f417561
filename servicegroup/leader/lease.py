"""The leader lease: one sweeping daemon at a time, chosen in SQL whatever the driver.

Why SQL
    Records always live in SQL, so a lease row needs no extra dependency,
    behaves the same on every driver and is testable everywhere; keeping it is
    one tiny UPDATE per sweep. It is "a database lock" done safely: it expires
    on the SQL server's clock (a dead leader loses it without anyone's help),
    and each takeover bumps `epoch`, so a writer can check (holder, epoch).

Why every leader write confirms the lease in its own transaction
    `Hold.confirm(conn)` re-checks and extends the lease with an UPDATE that
    locks the lease row until commit, so a takeover cannot commit between the
    check and the leader's writes: a deposed leader writes nothing. Lock
    order is lease -> event_sequence -> services -> claims in every writer.

Usage::

    epoch = acquire(engine, "sweeper", holder, None, duration=3.0)
    if epoch:
        hold = Hold("sweeper", holder, epoch, 3.0)
        with writing(engine) as conn:
            if hold.confirm(conn):
                ...  # write as the leader
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from oslo_config import cfg
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy import exc as sa_exc

from servicegroup.db.engine import writing
from servicegroup.db.models import leases, server_now

LOG = logging.getLogger(__name__)

SWEEPER = "sweeper"


@dataclass(frozen=True, slots=True)
class Hold:
    """A lease as one holder holds it at one epoch: what leader writes confirm."""

    name: str
    holder: str
    epoch: int
    duration: float

    def confirm(self, conn: Connection) -> bool:
        """Whether we still hold it, extending it; inside the writing transaction."""
        return confirm(conn, self.name, self.holder, self.epoch, self.duration)


def acquire(engine: Engine, name: str, holder: str, epoch: int | None, duration: float) -> int:
    """Renew our lease or take an expired one; the epoch we hold, or 0 if another does.

    Renewal needs (holder, epoch) to match, so a holder that lost the lease
    and got it back is told so by a new epoch.
    """
    with writing(engine) as conn:
        now = conn.execute(select(server_now())).scalar_one()
        expires = now + timedelta(seconds=duration)
        where = leases.c.name == name
        if epoch is not None:
            mine = where & (leases.c.holder == holder) & (leases.c.epoch == epoch)
            renewed = conn.execute(update(leases).where(mine).values(expires_at=expires))
            if renewed.rowcount == 1:
                return epoch
        taken = conn.execute(
            update(leases)
            .where(where & (leases.c.expires_at < now))
            .values(holder=holder, epoch=leases.c.epoch + 1, expires_at=expires)
        )
        if taken.rowcount == 1:
            taken_epoch: int = conn.execute(select(leases.c.epoch).where(where)).scalar_one()
            return taken_epoch
        if conn.execute(select(leases.c.name).where(where)).first() is not None:
            return 0
    try:
        with writing(engine) as conn:
            conn.execute(
                insert(leases).values(name=name, holder=holder, epoch=1, expires_at=expires)
            )
    except sa_exc.IntegrityError:
        return 0  # another daemon created it first; it leads
    return 1


def confirm(conn: Connection, name: str, holder: str, epoch: int, duration: float) -> bool:
    """Re-check and extend our lease inside a writing transaction (see the module docstring)."""
    now = conn.execute(select(server_now())).scalar_one()
    stmt = (
        update(leases)
        .where(
            (leases.c.name == name)
            & (leases.c.holder == holder)
            & (leases.c.epoch == epoch)
            & (leases.c.expires_at >= now)
        )
        .values(expires_at=now + timedelta(seconds=duration))
    )
    return conn.execute(stmt).rowcount == 1


def holds(conn: Connection, name: str, holder: str, epoch: int, lock: bool = True) -> bool:
    """Whether (holder, epoch) holds the lease now, without extending it; locking its row
    unless told not to (a read that only wants to know).

    For writes made beside the sweep (the notifier's cursor, leader/notifier.py):
    the lock keeps a takeover from committing before the caller's commit, as
    confirm() does, but a thread other than the sweeper's must not keep the
    lease alive, or a hung sweeper would never be replaced.
    """
    now = conn.execute(select(server_now())).scalar_one()
    stmt = select(leases.c.name).where(
        (leases.c.name == name)
        & (leases.c.holder == holder)
        & (leases.c.epoch == epoch)
        & (leases.c.expires_at >= now)
    )
    if lock:
        stmt = stmt.with_for_update()
    return conn.execute(stmt).first() is not None


def holder_of(engine: Engine, name: str) -> tuple[str, int] | None:
    with engine.connect() as conn:
        found = conn.execute(select(leases.c.holder, leases.c.epoch).where(leases.c.name == name))
        row = found.first()
    return None if row is None else (row[0], row[1])


def duration(conf: cfg.ConfigOpts, down_time: float) -> float:
    """The sweeper's lease, kept short enough that a dead leader is replaced in time.

    A successor takes over at most lease + sweep_interval after the leader's
    last renewal; keeping that under service_down_time means the hand-over
    is quicker than any service death it must report.
    """
    interval: float = conf.events.sweep_interval
    lease: float = conf.events.leader_lease or 3 * interval
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
