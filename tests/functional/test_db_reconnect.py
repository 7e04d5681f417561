"""Pooled connections killed on the server side: the next call still succeeds.

The engine pings on checkout (db/engine.py) except on heartbeats, single or
in a batch, which skip the ping and retry once on a dead connection instead. Killing every
pooled connection's server backend is what a database restart does to a
pool; the restart itself is the faults suite's business.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from servicegroup import State
from servicegroup.db.engine import make_engine
from tests.conftest import empty_tables


def _kill_pooled_connections(url: str, engine: sa.Engine) -> int:
    """Terminate, from an admin connection, every other session on the group's database."""
    backend = make_url(url).get_backend_name()
    database = make_url(url).database
    admin = make_engine(url)
    killed = 0
    try:
        with admin.connect() as conn:
            if backend == "postgresql":
                pids = conn.execute(
                    sa.text(
                        "SELECT pid FROM pg_stat_activity"
                        " WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": database},
                ).scalars()
                for pid in list(pids):
                    conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                    killed += 1
            else:
                ids = conn.execute(
                    sa.text(
                        "SELECT id FROM information_schema.processlist"
                        " WHERE db = :db AND id <> CONNECTION_ID()"
                    ),
                    {"db": database},
                ).scalars()
                for conn_id in list(ids):
                    conn.exec_driver_sql(f"KILL {int(conn_id)}")
                    killed += 1
            conn.commit()
    finally:
        admin.dispose()
    return killed


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
@pytest.mark.parametrize("first", ["heartbeat", "heartbeat_many", "get_all", "register"])
def test_calls_succeed_after_pooled_connections_are_killed(
    dialect: str, first: str, request: pytest.FixtureRequest, make_group
) -> None:
    url = request.getfixturevalue(f"{dialect}_db")
    empty_tables(url)
    sg = make_group(url, service_down_time=60)
    services = [sg.register(f"host-{i}", "reconnect") for i in range(3)]
    for svc in services:
        sg.heartbeat(svc)
    # Several pooled connections, all idle in the pool when killed: a retry
    # that took the next pooled connection unpinged would meet a dead one too.
    held = [sg.engine.connect() for _ in range(3)]
    for conn in held:
        conn.close()
    assert sg.engine.pool.checkedin() >= 3
    assert _kill_pooled_connections(url, sg.engine) >= 1

    if first == "heartbeat":
        for svc in services:  # every pooled connection was dead
            sg.heartbeat(svc)
    elif first == "heartbeat_many":  # the group commit's batch: no ping either
        assert sg.heartbeat_many(services) == {}
    elif first == "get_all":
        assert {s.state for s in sg.get_all(binary="reconnect")} == {State.UP}
    else:
        sg.register("host-new", "reconnect")
    for svc in services:
        sg.heartbeat(svc)
    beating = {svc.uuid for svc in services}
    states = {s.state for s in sg.get_all(binary="reconnect") if s.service.uuid in beating}
    assert states == {State.UP}
