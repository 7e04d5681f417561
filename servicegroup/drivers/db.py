"""The `db` driver: liveness in the services table itself.

A heartbeat is one UPDATE stamped with the SQL server's clock, and liveness
for any set of services comes out of the same SELECT that reads the records,
judged against the server's clock read in that SELECT.
"""

from __future__ import annotations

from sqlalchemy import update

from servicegroup.db import records
from servicegroup.db.engine import writing
from servicegroup.db.models import server_now, services
from servicegroup.drivers.base import Driver, Pulse, Reading
from servicegroup.exceptions import NotFound
from servicegroup.service import Service


class DbDriver(Driver):
    name = "db"
    backend = "database"

    def beat(self, service: Service) -> None:
        stmt = (
            update(services)
            .where((services.c.uuid == service.uuid) & (services.c.deleted == 0))
            .values(report_count=services.c.report_count + 1, last_seen_up=server_now())
        )
        with records.sql_errors(), writing(self.engine) as conn:
            if conn.execute(stmt).rowcount == 0:
                raise NotFound("service", service.uuid)

    def read(self, recordset: records.RecordSet) -> Reading:
        return Reading(
            now=recordset.db_now,
            pulses={s.uuid: Pulse(s.last_seen_up) for s in recordset.services},
        )

    def forget(self, service: Service) -> None:
        stmt = update(services).where(services.c.uuid == service.uuid).values(last_seen_up=None)
        with records.sql_errors(), writing(self.engine) as conn:
            conn.execute(stmt)

    def ping(self) -> None:
        records.ping(self.engine)
