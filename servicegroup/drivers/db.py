"""The `db` driver: liveness in the services table itself.

A heartbeat is one UPDATE stamped with the SQL server's clock, and liveness
for any set of services comes out of the same SELECT that reads the records,
judged against the server's clock read in that SELECT.
"""

from __future__ import annotations

from sqlalchemy import bindparam, update

from servicegroup.db import records
from servicegroup.db.engine import write_one, writing
from servicegroup.db.models import server_now, services
from servicegroup.drivers.base import Driver, Reading, new_pulse
from servicegroup.exceptions import NotFound
from servicegroup.service import Service

# Built once: write_one() compiles it once per engine.
BEAT = (
    update(services)
    .where((services.c.uuid == bindparam("beat_uuid")) & (services.c.deleted == 0))
    .values(report_count=services.c.report_count + 1, last_seen_up=server_now())
)


class DbDriver(Driver):
    name = "db"
    backend = "database"

    def beat(self, service: Service) -> None:
        """The UPDATE and its COMMIT, on a raw pooled connection (write_one).

        Running it twice is harmless, as write_one's retry may: the UPDATE
        sets last_seen_up to the server's now. At worst, a connection lost
        during COMMIT counts one report twice.
        """
        with records.sql_errors():
            if write_one(self.engine, BEAT, {"beat_uuid": service.uuid}) == 0:
                raise NotFound("service", service.uuid)

    def read(self, recordset: records.RecordSet) -> Reading:
        # Only beating services get a pulse: a missing uuid means NEVER (base.py).
        return Reading(
            now=recordset.db_now,
            pulses={
                s.uuid: new_pulse(s.last_seen_up)
                for s in recordset.services
                if s.last_seen_up is not None
            },
        )

    def forget(self, service: Service) -> None:
        stmt = update(services).where(services.c.uuid == service.uuid).values(last_seen_up=None)
        with records.sql_errors(), writing(self.engine) as conn:
            conn.execute(stmt)

    def ping(self) -> None:
        records.ping(self.engine)
