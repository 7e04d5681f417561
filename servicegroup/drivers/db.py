"""The `db` driver: liveness in the services table itself.

A heartbeat is one UPDATE stamped with the SQL server's clock, and liveness
for any set of services comes out of the same SELECT that reads the records,
judged against the server's clock read in that SELECT.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, String, any_, bindparam, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import ARRAY

from servicegroup.backend_errors import sql_errors
from servicegroup.db import records
from servicegroup.db.engine import RawWrite, is_deadlock, writing
from servicegroup.db.models import server_now, services
from servicegroup.drivers.base import Driver, Pulse, Reading, new_pulse
from servicegroup.exceptions import NotFound
from servicegroup.identity_cache import IdentityCache
from servicegroup.service import Service

# Built once; each driver compiles it once for its engine (RawWrite).
BEAT = (
    update(services)
    .where((services.c.uuid == bindparam("beat_uuid")) & (services.c.deleted == 0))
    .values(report_count=services.c.report_count + 1, last_seen_up=server_now())
)
# The batch form: beat_many adds `uuid IN (...)`.
BEAT_MANY = (
    update(services)
    .where(services.c.deleted == 0)
    .values(report_count=services.c.report_count + 1, last_seen_up=server_now())
)
# PostgreSQL's form of the batch: the uuids as one array parameter, so the
# statement is compiled once whatever the batch's size (RawWrite).
BEAT_ARRAY = BEAT_MANY.where(
    services.c.uuid == any_(bindparam("beat_uuids", type_=ARRAY(String)))
).returning(services.c.uuid)
# Uuids per statement of a batch: well under SQLite's 32,766 bound
# parameters and MySQL's default 64 MiB packet; one transaction for all.
BEAT_CHUNK = 1000
# A batch chosen as a deadlock victim was rolled back whole: run it again.
DEADLOCK_ATTEMPTS = 3


class DbDriver(Driver):
    name = "db"
    refuses_deleted = True
    backend = "database"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uuid -> the last Pulse read; records.Reuse hands back the same
        # Service, hence the same last_seen_up object, for an unchanged row,
        # so an identity test finds the Pulse still right (0.1 us, against
        # 0.4 us to build one: a tenth of a 10,000-row get_all's Python).
        self._pulses: IdentityCache[Pulse] = self.identity_cache()
        self._beat = RawWrite(self.engine, BEAT, ["beat_uuid"])
        self._beat_array: RawWrite | None = None
        if self.engine.dialect.name == "postgresql":
            self._beat_array = RawWrite(self.engine, BEAT_ARRAY, ["beat_uuids"])

    def beat(self, service: Service) -> None:
        """The UPDATE and its COMMIT, on a raw pooled connection (RawWrite).

        Running it twice is harmless, as RawWrite's retry may: the UPDATE
        sets last_seen_up to the server's now. At worst, a connection lost
        during COMMIT counts one report twice.
        """
        with sql_errors():
            if self._beat({"beat_uuid": service.uuid}) == 0:
                raise NotFound("service", service.uuid)

    def beat_many(self, services: Sequence[Service]) -> dict[str, BaseException]:
        """One UPDATE for the whole batch, stamped by the server's clock like beat().

        On PostgreSQL it is one statement whatever the batch's size, the
        uuids in one array, run as RawWrite runs beat(): no checkout ping,
        no BEGIN and no COMMIT, so one round trip. Against a transaction of
        `uuid IN (...)` through a Connection, per batch of 30 on 100,000
        rows (alternated, one thread): 2.13-2.32 -> 1.02-1.20 ms, and the
        daemon's CPU 1,047-1,174 -> 263-315 us. Elsewhere, `uuid IN (...)`
        per BEAT_CHUNK in one transaction.

        The uuids go in sorted, so two daemons' batches that share a service
        lock its row in the same order; a deadlock all the same rolls the
        batch back whole, and it runs again.
        """
        uuids = sorted({service.uuid for service in services})
        with sql_errors():
            for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
                try:
                    found = self._beat_batch(uuids)
                    break
                except sa_exc.OperationalError as exc:
                    if attempt == DEADLOCK_ATTEMPTS or not is_deadlock(exc):
                        raise
        return {
            service.uuid: NotFound("service", service.uuid)
            for service in services
            if service.uuid not in found
        }

    def _beat_batch(self, uuids: list[str]) -> set[str]:
        """The uuids whose live rows the batch stamped."""
        if self._beat_array is not None:
            return {row[0] for row in self._beat_array.rows({"beat_uuids": uuids})}
        found: set[str] = set()
        with writing(self.engine) as conn:
            for start in range(0, len(uuids), BEAT_CHUNK):
                found.update(self._beat_chunk(conn, uuids[start : start + BEAT_CHUNK]))
        return found

    def _beat_chunk(self, conn: Connection, uuids: list[str]) -> Sequence[str]:
        """The uuids among `uuids` whose live rows the UPDATE stamped."""
        stmt = BEAT_MANY.where(services.c.uuid.in_(uuids))
        if self.engine.dialect.update_returning:  # PostgreSQL, SQLite 3.35+
            return conn.execute(stmt.returning(services.c.uuid)).scalars().all()
        # MariaDB/MySQL: rowcount counts matched rows (SQLAlchemy asks for
        # CLIENT_FOUND_ROWS), so only a short count needs a look at which.
        if conn.execute(stmt).rowcount == len(uuids):
            return uuids
        live = select(services.c.uuid).where(services.c.uuid.in_(uuids) & (services.c.deleted == 0))
        return conn.execute(live).scalars().all()

    def read(self, recordset: records.RecordSet) -> Reading:
        # Only beating services get a pulse: a missing uuid means NEVER (base.py).
        last, pulses = self._pulses.for_read(), {}
        for service in recordset.services:
            seen = service.last_seen_up
            if seen is None:
                continue
            pulse = last.get(service.uuid)
            if pulse is None or pulse.last_heartbeat is not seen:
                pulse = last[service.uuid] = new_pulse(seen)
            pulses[service.uuid] = pulse
        return Reading(now=recordset.db_now, pulses=pulses)

    def forget(self, service: Service) -> None:
        stmt = update(services).where(services.c.uuid == service.uuid).values(last_seen_up=None)
        with sql_errors(), writing(self.engine) as conn:
            conn.execute(stmt)

    def ping(self) -> None:
        records.ping(self.engine)
