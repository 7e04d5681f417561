"""The db driver's promises, on SQLite, PostgreSQL and MariaDB.

A heartbeat is one UPDATE stamped by the database server's clock; liveness for
any set of services is one SELECT that also reads that clock. These are the
properties that fix nova's failures (a round trip per host, clock skew), so
they are counted and checked here rather than assumed.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from servicegroup import ServiceGroup, State
from servicegroup.clock import SkewedClock
from servicegroup.db.engine import make_engine
from servicegroup.db.models import server_now, services
from servicegroup.exceptions import BackendError, InvalidInput, NotFound

# What each dialect's server_now() compiles to: the heartbeat must carry this
# expression, not a timestamp computed on the client.
SERVER_CLOCK_SQL = {
    "sqlite": "strftime('%Y-%m-%d %H:%M:%f', 'now')",
    "postgresql": "clock_timestamp()",
    "mysql": "UTC_TIMESTAMP(6)",
}


class Statements:
    """Every statement sent to the server through an engine's dialect.

    Recorded on the dialect's do_execute (and its no-params and executemany
    twins), which SQLAlchemy's Connection calls and which the heartbeat's
    lean path (db/engine.py RawWrite) calls too; the cursor events would
    miss the latter. The checkout ping goes through do_ping, not these, and
    checkouts are counted separately so a test can say "one checkout, hence
    at most one ping, and exactly these statements". Should a ping ever come
    through do_execute, it is recognised by its text and kept apart.
    """

    PING = ("SELECT 1", "/* ping */ SELECT 1")
    # Transaction control is not a statement of work. PostgreSQL's and MySQL's
    # drivers open transactions without do_execute; on SQLite servicegroup
    # issues BEGIN IMMEDIATE itself (db/engine.py writing()), so it shows
    # here, and is recorded apart.
    TRANSACTION = ("BEGIN", "BEGIN DEFERRED", "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")
    EXECUTE = ("do_execute", "do_execute_no_params", "do_executemany")

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.all: list[tuple[str, object]] = []
        # psycopg: whether each statement ran in autocommit (its own round trip).
        self.autocommit: list[object] = []
        self.checkouts = 0

    def _recorder(self, name: str):
        original = getattr(self.engine.dialect, name)

        def record(cursor, statement, *args, **kwargs):
            # do_execute(cursor, statement, parameters, context); no_params has no parameters.
            parameters = args[0] if args and name != "do_execute_no_params" else None
            self.all.append((statement, parameters))
            if self.engine.dialect.driver == "psycopg":
                self.autocommit.append(cursor.connection.autocommit)
            return original(cursor, statement, *args, **kwargs)

        return record

    def _on_checkout(self, *args) -> None:
        self.checkouts += 1

    @contextmanager
    def recording(self) -> Iterator[Statements]:
        self.all.clear()
        self.autocommit.clear()
        self.checkouts = 0
        dialect = self.engine.dialect
        for name in self.EXECUTE:
            setattr(dialect, name, self._recorder(name))
        event.listen(self.engine.pool, "checkout", self._on_checkout)
        try:
            yield self
        finally:
            for name in self.EXECUTE:
                delattr(dialect, name)
            event.remove(self.engine.pool, "checkout", self._on_checkout)

    @property
    def pings(self) -> list[str]:
        return [s for s, _ in self.all if s.strip().upper() in self.PING]

    @property
    def transaction_control(self) -> list[str]:
        return [s for s, _ in self.all if s.strip().upper() in self.TRANSACTION]

    @property
    def work(self) -> list[tuple[str, object]]:
        skip = self.PING + self.TRANSACTION
        return [(s, p) for s, p in self.all if s.strip().upper() not in skip]

    def verbs(self) -> list[str]:
        return [s.split(None, 1)[0].upper() for s, _ in self.work]


def dialect(group: ServiceGroup) -> str:
    name = group.engine.dialect.name
    return "mysql" if name == "mariadb" else name


def bulk_register(
    group: ServiceGroup, count: int, binary: str = "bulk", prefix: str = "host"
) -> None:
    """Insert records in one executemany: the setup of a large fleet in seconds."""
    created = datetime.now(UTC).replace(tzinfo=None)
    rows = [
        {
            "uuid": str(uuid.uuid4()),
            "host": f"{prefix}-{i:05d}",
            "binary": binary,
            "created_at": created,
        }
        for i in range(count)
    ]
    with group.engine.begin() as conn:
        conn.execute(services.insert(), rows)


def beat_all(group: ServiceGroup, binary: str) -> None:
    with group.engine.begin() as conn:
        conn.execute(
            services.update().where(services.c.binary == binary).values(last_seen_up=server_now())
        )


def wait_for_state(group: ServiceGroup, service, state: State, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while (current := group.get(service).state) is not state:
        assert time.monotonic() < deadline, f"still {current}, wanted {state}"
        time.sleep(0.02)


def row_count(group: ServiceGroup, live_only: bool = False) -> int:
    stmt = sa.select(sa.func.count()).select_from(services)
    if live_only:
        stmt = stmt.where(services.c.deleted == 0)
    with group.engine.connect() as conn:
        return conn.execute(stmt).scalar_one()


# -- heartbeat: one UPDATE, stamped by the server ------------------------------


def test_heartbeat_is_one_update_stamped_by_the_server(sql_url, make_group) -> None:
    group = make_group(sql_url)
    service = group.register("compute-1", "nova-compute")
    stmts = Statements(group.engine)

    with stmts.recording():
        group.heartbeat(service)  # a Service object: no lookup of the record first

    assert stmts.checkouts == 1  # one connection: at most one pre-ping round trip
    assert stmts.pings == []
    assert stmts.verbs() == ["UPDATE"], stmts.all
    # Not even SQLite's BEGIN IMMEDIATE: the lone UPDATE is its own transaction
    # (db/engine.py RawWrite); the next tests show it still waits for the lock.
    assert stmts.transaction_control == [], stmts.all
    sql, params = stmts.work[0]
    assert SERVER_CLOCK_SQL[dialect(group)] in sql
    assert "report_count" in sql and "last_seen_up" in sql
    # No client-side time is sent: every bound value is the uuid, 0 or 1.
    values = params.values() if isinstance(params, dict) else params
    assert not any(isinstance(v, datetime) for v in values)

    record = group.get(service).service
    assert record.report_count == 1
    assert record.last_seen_up is not None


def test_a_batch_of_heartbeats_is_one_update(sql_url, make_group) -> None:
    group = make_group(sql_url)
    fleet = [group.register(f"compute-{i}", "nova-compute") for i in range(5)]
    stmts = Statements(group.engine)

    with stmts.recording():
        assert group.heartbeat_many(fleet) == {}

    assert stmts.verbs() == ["UPDATE"], stmts.all
    assert SERVER_CLOCK_SQL[dialect(group)] in stmts.work[0][0]
    if dialect(group) == "postgresql":
        # One round trip: the uuids in one array, and no BEGIN or COMMIT
        # around the statement (it ran in autocommit; db/engine.py RawWrite).
        assert stmts.autocommit == [True]
        assert "ANY" in stmts.work[0][0]
        with group.engine.connect() as conn:  # the same connection (LIFO), back as it was
            assert conn.connection.dbapi_connection.autocommit is False
    assert {record.service.report_count for record in group.get_all()} == {1}


def test_heartbeat_by_id_adds_only_the_record_lookup(sql_url, make_group) -> None:
    group = make_group(sql_url)
    service = group.register("compute-1", "nova-compute")
    stmts = Statements(group.engine)
    with stmts.recording():
        group.heartbeat(service.uuid)
    assert stmts.verbs() == ["SELECT", "UPDATE"]


def test_report_count_counts_heartbeats(sql_url, make_group) -> None:
    group = make_group(sql_url)
    service = group.register("compute-1", "nova-compute")
    for _ in range(7):
        group.heartbeat(service)
    assert group.get(service).service.report_count == 7
    # Registering again (a restart) keeps the record and its count.
    again = group.register("compute-1", "nova-compute")
    assert again.uuid == service.uuid
    assert again.report_count == 7


def test_sqlite_heartbeats_reuse_a_connection_kept_out_of_the_pool(sqlite_url, make_group):
    # db/engine.py _Spares: after the first beat, beats take no pool checkout;
    # a connection whose write failed is closed, not kept; dispose() closes
    # the idle ones; concurrent beats keep at most MAX_IDLE.
    group = make_group(sqlite_url)
    spares = group.driver._beat.spares
    beating = [group.register(f"compute-{i}", "nova-compute") for i in range(8)]
    stmts = Statements(group.engine)
    with stmts.recording():
        for service in beating * 3:
            group.heartbeat(service)
    assert stmts.checkouts == 1
    assert stmts.verbs() == ["UPDATE"] * 24
    assert len(spares.idle) == 1

    kept = spares.idle[0]
    with group.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE services RENAME TO services_away")
    with pytest.raises(BackendError):
        group.heartbeat(beating[0])
    assert len(spares.idle) == 0
    with pytest.raises(sqlite3.ProgrammingError):  # closed
        kept.execute("SELECT 1")
    with group.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE services_away RENAME TO services")
    group.heartbeat(beating[0])
    assert group.get(beating[0]).service.report_count == 4

    start = threading.Barrier(spares.MAX_IDLE + 4)

    def beat(service) -> None:
        start.wait()
        for _ in range(20):
            group.heartbeat(service)

    threads = [threading.Thread(target=beat, args=(beating[i % 8],)) for i in range(start.parties)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert 1 <= len(spares.idle) <= spares.MAX_IDLE
    assert sum(group.get(s).service.report_count for s in beating) == 24 + 1 + 20 * start.parties

    idle = list(spares.idle)
    group.engine.dispose()
    assert len(spares.idle) == 0
    for conn in idle:
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")
    group.heartbeat(beating[0])  # a disposed engine still works, as SQLAlchemy's do


def test_heartbeat_waits_for_another_sqlite_writer(sqlite_url, make_group) -> None:
    # The heartbeat sends no BEGIN IMMEDIATE; its lone UPDATE must still wait
    # for the write lock (busy timeout), not fail with "database is locked".
    group = make_group(sqlite_url)
    service = group.register("compute-1", "nova-compute")
    other = sa.create_engine(sqlite_url, connect_args={"isolation_level": None})
    outcome: list[BaseException | None] = []

    def beat() -> None:
        try:
            group.heartbeat(service)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    try:
        with other.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            conn.exec_driver_sql("UPDATE services SET version = 2")
            beater = threading.Thread(target=beat)
            beater.start()
            time.sleep(0.3)  # the heartbeat is now waiting for the lock
            assert outcome == []
            conn.exec_driver_sql("COMMIT")
        beater.join(10)
    finally:
        other.dispose()
    assert outcome == [None]
    record = group.get(service).service
    assert (record.report_count, record.version) == (1, 2)


def test_heartbeats_and_read_write_transactions_interleave(sql_url, make_group) -> None:
    # Heartbeats from several threads against transactions that read, then
    # write (update() reads the row first): on SQLite the latter's BEGIN
    # IMMEDIATE and the heartbeat's lone UPDATE both wait for the lock.
    group = make_group(sql_url)
    beating = [group.register(f"compute-{i}", "nova-compute") for i in range(4)]
    admin = group.register("admin", "nova-conductor")
    beats, updates = 100, 50
    errors: list[BaseException] = []

    def run(work) -> None:
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    def heartbeats(service) -> None:
        for _ in range(beats):
            group.heartbeat(service)

    def read_then_write() -> None:
        for i in range(updates):
            group.set_version(admin, i + 1)

    workers = [threading.Thread(target=run, args=(lambda s=s: heartbeats(s),)) for s in beating]
    workers.append(threading.Thread(target=run, args=(read_then_write,)))
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert errors == []
    assert [group.get(s).service.report_count for s in beating] == [beats] * len(beating)
    assert group.get(admin).service.version == updates


@pytest.mark.parametrize("batch", [False, True], ids=["heartbeat", "heartbeat_many"])
def test_a_failed_heartbeat_leaves_its_connection_clean(sql_url, make_group, batch) -> None:
    # A statement error inside the heartbeat's transaction: the caller gets
    # SQLAlchemy's exception or BackendError (backend_errors.sql_errors()), never the
    # driver's own, and the connection goes back to the pool rolled back (the
    # pool has no reset-on-return): the next heartbeat on it succeeds. On
    # PostgreSQL, the failed statement ran in autocommit: it must come back
    # out of it.
    group = make_group(sql_url)
    service = group.register("compute-1", "nova-compute")

    def beat() -> None:
        if batch:
            assert group.heartbeat_many([service]) == {}
        else:
            group.heartbeat(service)

    beat()
    rename = "ALTER TABLE {} RENAME TO {}"
    with group.engine.begin() as conn:
        conn.exec_driver_sql(rename.format("services", "services_away"))
    try:
        with pytest.raises((BackendError, sa.exc.DBAPIError)) as failed:
            beat()
        assert not isinstance(failed.value, group.engine.dialect.loaded_dbapi.Error)
    finally:
        with group.engine.begin() as conn:
            conn.exec_driver_sql(rename.format("services_away", "services"))
    pooled = group.engine.pool.checkedin()
    for _ in range(pooled + 1):  # every pooled connection, the failed one among them
        beat()
    assert group.get(service).service.report_count == pooled + 2
    if dialect(group) == "postgresql":
        with group.engine.connect() as conn:
            assert conn.connection.dbapi_connection.autocommit is False


# -- query: one SELECT whatever the size of the fleet --------------------------


@pytest.mark.parametrize(
    ("ask", "expected"),
    [
        pytest.param(lambda g: g.get_all(), (1, 300), id="get_all"),
        pytest.param(lambda g: g.get_all(binary="bulk"), (1, 300), id="binary"),
        pytest.param(lambda g: g.get_all(binary="bulk", state="up"), (1, 300), id="binary+state"),
        pytest.param(lambda g: g.get_all(host="host-00000"), (1, 1), id="host"),
    ],
)
def test_liveness_of_any_set_is_one_select(sql_url, make_group, ask, expected) -> None:
    group = make_group(sql_url)
    counted = Statements(group.engine)
    sizes, verbs = [], []
    for add in (1, 299):  # 1 service, then 300 (same binary, other hosts)
        # Later hosts get another prefix, so the host filter still matches one.
        bulk_register(group, add, prefix="host" if add == 1 else "more")
        beat_all(group, "bulk")
        with counted.recording():
            statuses = ask(group)
        sizes.append(len(statuses))
        verbs.append(counted.verbs())
        assert counted.checkouts == 1
        # The server's "now" comes out of that same SELECT.
        assert SERVER_CLOCK_SQL[dialect(group)] in counted.work[0][0]
        assert all(s.state is State.UP for s in statuses)

    assert verbs == [["SELECT"], ["SELECT"]]
    assert tuple(sizes) == expected


def test_get_all_judges_a_mixed_fleet_in_one_select(sql_url, make_group) -> None:
    group = make_group(sql_url)
    bulk_register(group, 150, binary="alive")
    bulk_register(group, 150, binary="silent")
    beat_all(group, "alive")
    stmts = Statements(group.engine)
    with stmts.recording():
        up = group.get_all(state="up")
        down = group.get_all(state=State.DOWN)
    assert stmts.verbs() == ["SELECT", "SELECT"]
    assert {s.service.binary for s in up} == {"alive"} and len(up) == 150
    assert {s.service.binary for s in down} == {"silent"} and len(down) == 150
    assert all(s.last_heartbeat is None for s in down)


def test_is_up_is_one_select(sql_url, make_group) -> None:
    group = make_group(sql_url)
    service = group.register("compute-1", "nova-compute")
    group.heartbeat(service)
    stmts = Statements(group.engine)
    with stmts.recording():
        assert group.is_up(service)
    assert stmts.verbs() == ["SELECT"]


# -- the server's clock, not the hosts' ----------------------------------------


@pytest.mark.parametrize(
    ("writer_skew", "reader_skew"),
    [(3600, -3600), (-3600, 3600), (3600, 3600), (-3600, -3600)],
    ids=["writer-ahead", "writer-behind", "both-ahead", "both-behind"],
)
def test_host_clock_skew_cannot_flip_a_state(sql_url, make_group, writer_skew, reader_skew):
    writer = make_group(sql_url, clock=SkewedClock(writer_skew))
    reader = make_group(sql_url, clock=SkewedClock(reader_skew))
    assert writer.down_time == reader.down_time == 0.5

    alive = writer.register("compute-1", "nova-compute")
    silent = writer.register("compute-2", "nova-compute")
    writer.heartbeat(alive)

    # Up stays up, as seen from both skewed hosts...
    assert reader.is_up(alive)
    assert writer.is_up(alive)
    # ...and down stays down: an hour of skew does not make a silent service look fresh.
    assert reader.get(silent).state is State.DOWN
    assert writer.get(silent).state is State.DOWN

    # The stamp is the server's time, nowhere near either skewed clock.
    stamp = reader.get(alive).last_heartbeat
    assert stamp is not None
    for clock in (writer.clock, reader.clock):
        assert abs((clock.now() - stamp).total_seconds()) > 1800

    # And a beat that ages past down_time goes down for both, at the same moment.
    wait_for_state(reader, alive, State.DOWN)
    assert writer.get(alive).state is State.DOWN


def test_joined_service_stays_up_under_skew(sql_url, make_group) -> None:
    writer = make_group(sql_url, clock=SkewedClock(-3600))
    reader = make_group(sql_url, clock=SkewedClock(3600))
    service = writer.register("compute-1", "nova-compute")
    reporter = writer.join(service)
    wait_for_state(reader, service, State.UP)
    # Several down_times later it is still up: every beat keeps it fresh on the server clock.
    deadline = time.monotonic() + 3 * reader.down_time
    while time.monotonic() < deadline:
        assert reader.is_up(service)
        time.sleep(0.05)
    writer.leave(service)
    assert not reporter.alive
    assert reader.get(service).state is State.DOWN


# -- sub-second precision ------------------------------------------------------


def test_timestamps_keep_sub_second_precision(sql_url, make_group) -> None:
    group = make_group(sql_url)
    records = [group.register(f"compute-{i}", "nova-compute") for i in range(3)]
    # created_at: a whole-second column would zero every fraction.
    assert any(r.created_at.microsecond for r in records)

    service = records[0]
    stamps = []
    for _ in range(2):
        group.heartbeat(service)
        stamps.append(group.get(service).last_heartbeat)
        time.sleep(0.045)
    first, second = stamps
    assert first is not None and second is not None
    assert first.tzinfo is not None and second.tzinfo is not None
    assert second > first
    assert first.microsecond or second.microsecond
    # What was stored is what is read back: the record and the pulse agree.
    assert group.get(service).service.last_seen_up == second


# -- records: uniqueness, re-registration, concurrency ------------------------


def test_host_binary_unique_among_live_rows(sql_url, make_group) -> None:
    group = make_group(sql_url)
    first = group.register("compute-1", "nova-compute", version=1)
    again = group.register("compute-1", "nova-compute", version=2)
    assert again.uuid == first.uuid and again.version == 2
    other_binary = group.register("compute-1", "nova-conductor")
    other_host = group.register("compute-2", "nova-compute")
    assert len({first.uuid, other_binary.uuid, other_host.uuid}) == 3
    assert row_count(group) == 3

    # The constraint lives in the database, not only in register()'s SELECT.
    with pytest.raises(sa.exc.IntegrityError), group.engine.begin() as conn:
        conn.execute(
            services.insert().values(
                uuid="00000000-0000-4000-8000-000000000000",
                host="compute-1",
                binary="nova-compute",
                created_at=datetime.now(UTC).replace(tzinfo=None),
            )
        )
    assert row_count(group) == 3


def test_deleted_service_can_register_again(sql_url, make_group) -> None:
    group = make_group(sql_url)
    uuids = []
    for _ in range(3):  # several deleted rows of one name must coexist
        service = group.register("compute-1", "nova-compute")
        group.heartbeat(service)
        uuids.append(service.uuid)
        group.delete(service)
        assert group.get_all(host="compute-1") == []
    assert len(set(uuids)) == 3
    back = group.register("compute-1", "nova-compute")
    assert back.uuid not in uuids
    assert back.report_count == 0 and back.last_seen_up is None
    assert row_count(group) == 4
    assert row_count(group, live_only=True) == 1
    assert [s.service.uuid for s in group.get_all(host="compute-1")] == [back.uuid]


def race_register(group: ServiceGroup, host: str, threads_n: int) -> list[str | BaseException]:
    """register() the same name from threads released together; each one's outcome."""
    barrier = threading.Barrier(threads_n)
    outcomes: list[str | BaseException] = []
    lock = threading.Lock()

    def register() -> None:
        try:
            barrier.wait(timeout=10)
            outcome: str | BaseException = group.register(host, "nova-compute", version=3).uuid
        except BaseException as exc:
            outcome = exc
        with lock:
            outcomes.append(outcome)

    workers = [threading.Thread(target=register) for _ in range(threads_n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    return outcomes


def test_concurrent_register_yields_one_record(sql_url, make_group) -> None:
    # 8 threads released together: most lose the race at the unique constraint
    # and must come back with the winner's uuid, not an error. Several rounds,
    # because a single race may happen to serialise.
    group = make_group(sql_url)
    for round_ in range(3):
        outcomes = race_register(group, f"compute-{round_}", 8)
        assert [o for o in outcomes if isinstance(o, BaseException)] == []
        assert len(outcomes) == 8
        assert len(set(outcomes)) == 1
        assert row_count(group) == round_ + 1
    assert row_count(group, live_only=True) == 3


# -- bad input writes nothing --------------------------------------------------


@pytest.mark.parametrize(
    ("call", "field", "rule"),
    [
        (lambda g: g.register("", "nova-compute"), "host", "must not be empty"),
        (lambda g: g.register("h", "b\n"), "binary", "printable"),
        (lambda g: g.register("h", "b", topic=" t"), "topic", "whitespace"),
        (lambda g: g.register("h", "b", availability_zone="z" * 256), "availability_zone", "255"),
        (lambda g: g.register("h", "b", version=True), "version", "integer"),
        (lambda g: g.register("h", "b", version=-1), "version", "non-negative"),
        (lambda g: g.register("h", "b", version=2**31), "version", "at most"),
    ],
    ids=["empty-host", "binary-newline", "topic-space", "az-long", "bool-version", "neg", "big"],
)
def test_invalid_register_writes_nothing(sql_url, make_group, call, field, rule) -> None:
    group = make_group(sql_url)
    group.register("existing", "nova-compute")
    before = row_count(group)
    with pytest.raises(InvalidInput) as info:
        call(group)
    assert info.value.field == field
    assert rule in info.value.rule
    assert row_count(group) == before


def test_invalid_update_changes_nothing(sql_url, make_group) -> None:
    group = make_group(sql_url)
    service = group.register("compute-1", "nova-compute", version=4)
    long = "r" * 256
    cases = [
        (lambda: group.update(service, disabled=True, version=-5), "version"),
        (lambda: group.update(service, disabled=True, forced_down="yes"), "forced_down"),
        (lambda: group.update(service, disabled=True, disabled_reason=long), "disabled_reason"),
        (lambda: group.update(service, disabled=True, host="elsewhere"), "host"),
        (lambda: group.set_disabled(service, 1), "disabled"),
        (lambda: group.set_disabled(service, True, reason=7), "disabled_reason"),
        (lambda: group.set_forced_down(service, None), "forced_down"),
        (lambda: group.set_version(service, 1.5), "version"),
    ]
    for call, field in cases:
        with pytest.raises(InvalidInput) as info:
            call()
        assert info.value.field == field
    record = group.get(service).service
    assert (record.disabled, record.forced_down, record.version) == (False, False, 4)
    assert record.disabled_reason is None and record.updated_at is None


def test_heartbeat_of_a_deleted_service_is_not_found(sql_url, make_group) -> None:
    group = make_group(sql_url)
    service = group.register("compute-1", "nova-compute")
    group.delete(service)
    with pytest.raises(NotFound):
        group.heartbeat(service)
    assert row_count(group, live_only=True) == 0


@pytest.mark.parametrize("server", ["postgresql", "mysql"])
def test_the_pool_hands_out_the_connection_used_last(server, request) -> None:
    # db/engine.py: LIFO, so one beating thread keeps one hot server connection.
    engine = make_engine(request.getfixturevalue(f"{server}_db"))
    try:
        first, second = engine.raw_connection(), engine.raw_connection()
        first_dbapi, second_dbapi = first.dbapi_connection, second.dbapi_connection
        first.close()
        second.close()  # returned last
        again = engine.raw_connection()
        assert again.dbapi_connection is second_dbapi
        again.close()
        assert first_dbapi is not second_dbapi
    finally:
        engine.dispose()
