"""Engines configured the same way everywhere they are made.

A checkout ping keeps a restarted database from surfacing as stale-connection
errors (SQLAlchemy's pre-ping recipe, as a listener so the one hot path can
skip it: see RawWrite); SQLite gets WAL and a busy timeout so a reader never
blocks a heartbeat.

No reset-on-return: every connection comes back through a Connection, whose
close() rolls back a transaction it left open, and engine.begin() commits or
rolls back (RawWrite commits or rolls back itself); the pool's extra
ROLLBACK was a third round trip per heartbeat.

Every statement is bounded by `query_timeout`: a database behind a black hole
(a dead link, a frozen server, a firewall that drops packets) never answers,
and a client without its own deadline then waits for ever: heartbeats,
sweeps and HTTP requests all stop with it. PyMySQL has socket read/write
timeouts; libpq has none for answers, so psycopg connections are made of a
subclass whose every wait has a deadline (dependency_internals: the
connection is closed when it passes, and the pool discards it), plus TCP
keepalives and tcp_user_timeout
for a dead link and a server-side statement_timeout for a stuck server.

Every write goes through writing(): on SQLite a deferred transaction that
reads and then writes fails at once with "database is locked" when another
writer committed in between (it cannot upgrade its snapshot, so the busy
timeout does not apply); BEGIN IMMEDIATE takes the write lock up front and
waits for it instead. Reads stay deferred, so WAL readers never queue.

The heartbeat, the one statement every service sends every report_interval,
is the exception: RawWrite runs it on the pooled DBAPI connection itself,
and on SQLite on a connection kept out of the pool (_Spares). So does the
daemon's batch of heartbeats on PostgreSQL, where it is one statement too;
on psycopg such a lone statement runs in autocommit, one round trip.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from servicegroup import dependency_internals

# Set by RawWrite: it retries a dead connection instead of pinging.
_skip_ping: contextvars.ContextVar[bool] = contextvars.ContextVar("skip_ping", default=False)


def make_engine(
    url: str,
    connect_timeout: float = 5.0,
    pool_size: int = 10,
    query_timeout: float | None = None,
) -> Engine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {"pool_reset_on_return": None}
    connect_args: dict[str, Any] = {}
    if backend == "sqlite":
        connect_args = {"check_same_thread": False, "timeout": connect_timeout}
        if parsed.database in (None, "", ":memory:"):
            # One shared connection, or every checkout would see an empty database.
            kwargs["poolclass"] = StaticPool
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_recycle=3600)
        # LIFO: the connection used last goes out first, so a process that
        # beats from one thread keeps one hot server connection (and one
        # server backend's caches) instead of cycling through every idle
        # one, and connections a burst opened stay idle until recycled.
        kwargs["pool_use_lifo"] = True
        # Checking out a connection waits at most this long for a free one.
        kwargs["pool_timeout"] = connect_timeout + (query_timeout or 0.0)
        if backend == "postgresql":
            connect_args["connect_timeout"] = max(1, round(connect_timeout))
            if query_timeout:
                connect_args.update(_libpq_deadlines(query_timeout))
        elif backend in ("mysql", "mariadb"):
            connect_args["connect_timeout"] = max(1, round(connect_timeout))
            connect_args.setdefault("charset", "utf8mb4")
            if query_timeout and parsed.get_driver_name() == "pymysql":
                connect_args.update(read_timeout=query_timeout, write_timeout=query_timeout)
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    event.listen(engine.pool, "checkout", _checkout_ping(engine))
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    elif backend == "postgresql" and query_timeout and parsed.get_driver_name() == "psycopg":
        factory = dependency_internals.psycopg_bounded_connection(query_timeout)
        event.listen(
            engine,
            "do_connect",
            lambda _dialect, _record, cargs, cparams: factory.connect(*cargs, **cparams),
        )
    return engine


def _libpq_deadlines(query_timeout: float) -> dict[str, Any]:
    millis = max(1, round(query_timeout * 1000))
    idle = max(1, round(query_timeout))
    return {
        # The server gives up on a statement (a lock wait, a stuck plan).
        "options": f"-c statement_timeout={millis}",
        # The kernel gives up on a link that stopped acknowledging.
        "tcp_user_timeout": millis,
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": idle,
        "keepalives_count": 3,
    }


def writing(engine: Engine) -> AbstractContextManager[Connection]:
    """A write transaction (see the module docstring for why it is not engine.begin())."""
    return engine.execution_options(sqlite_begin="IMMEDIATE").begin()


class RawWrite:
    """One write statement, compiled once, run as its own transaction on a raw DBAPI connection.

    Speed trick, for the heartbeat, which every service sends every
    report_interval: through a Connection, SQLAlchemy's Python per call
    (events, execution context, result and transaction objects) cost several
    times the write itself on SQLite. Here the statement is compiled once
    (by the driver that owns this object, with SQLAlchemy's public compiler
    API); a call is a pool checkout, the dialect's do_execute and do_commit
    (so counters on the dialect see them), and a checkin. Measured per beat
    (issue 17, alternated, minimum): SQLite 29 against 169 us through
    engine.begin() (x5.8; 53 us without _Spares), PostgreSQL 472 against
    648 us (x1.37), MariaDB 587 against 873 us (x1.5).

    No checkout ping: on a disconnect the connection is invalidated and the
    statement runs once more on a pinged checkout, which cannot hand out
    another dead connection (a failed ping replaces every pooled connection
    older than it). The statement must therefore bear running twice (a
    disconnect during COMMIT may hide a success).

    No BEGIN IMMEDIATE on SQLite (compare writing()): SQLite connections are
    in autocommit mode (_sqlite_connect), so the lone statement is its own
    transaction, and a write statement takes the write lock before it reads
    a page: the busy timeout applies to that wait, and no earlier snapshot
    exists to go stale. do_commit is then a no-op. On a SQLite file the
    connection comes from _Spares, not the pool.

    Errors come out as from a Connection (DBAPIError subclasses, with
    connection_invalidated), for backend_errors.sql_errors() to map.

    Usage::

        beat = RawWrite(engine, update(t).where(t.c.id == bindparam("id")).values(...), ["id"])
        rowcount = beat({"id": 42})
    """

    def __init__(self, engine: Engine, stmt: ClauseElement, names: list[str]) -> None:
        self.engine = engine
        dialect = engine.dialect
        compiled = stmt.compile(dialect=dialect)
        if not isinstance(compiled, SQLCompiler):
            raise ValueError(f"RawWrite runs SQL statements, not {type(stmt).__name__}")
        bound = dict(compiled.construct_params(dict.fromkeys(names)))
        if not set(names) <= bound.keys() or compiled.post_compile_params:
            # An escaped bind name or an expanding IN: not worth handling here.
            raise ValueError(f"RawWrite cannot run {compiled.string!r}")
        self.sql = compiled.string
        self.bound = bound  # every bound value, the fixed ones already in place
        # Positional paramstyles: the values' order.
        self.order = tuple(compiled.positiontup or ()) if dialect.positional else None
        # Type conversions, as SQLAlchemy's own execution applies them (none
        # for strings and integers on the shipped dialects).
        self.processors: dict[str, Callable[[Any], Any]] = {}
        for key, bind in compiled.binds.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                self.processors[key] = process
        url = engine.url
        is_file = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
        self.spares = _Spares(engine) if is_file else None

    def __call__(self, params: dict[str, Any]) -> int:
        """Run it with `params`; its rowcount."""
        return self._run(params, fetch=False)[0]

    def rows(self, params: dict[str, Any]) -> list[Any]:
        """Run it with `params`; the rows its RETURNING clause gave back."""
        return self._run(params, fetch=True)[1]

    def _run(self, params: dict[str, Any], fetch: bool) -> tuple[int, list[Any]]:
        values = self.bound | params
        for key, process in self.processors.items():
            values[key] = process(values[key])
        parameters = values if self.order is None else tuple(values[k] for k in self.order)
        if self.spares is not None:
            return self.spares.write(self.sql, parameters, fetch)
        try:
            return _write(self.engine, self.sql, parameters, fetch, pinged=False)
        except sa_exc.DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        return _write(self.engine, self.sql, parameters, fetch, pinged=True)


def _write(
    engine: Engine, sql: str, parameters: Any, fetch: bool, pinged: bool
) -> tuple[int, list[Any]]:
    dialect = engine.dialect
    dbapi_error = dialect.loaded_dbapi.Error
    token = _skip_ping.set(not pinged)
    try:
        conn = engine.raw_connection()
    except dbapi_error as err:
        raise _wrap(engine, None, None, err, dialect.is_disconnect(err, None, None)) from err
    finally:
        _skip_ping.reset(token)
    dbapi_conn = conn.dbapi_connection
    try:
        return _execute_and_commit(dialect, dbapi_conn, sql, parameters, fetch)
    except dbapi_error as err:
        disconnect = dialect.is_disconnect(err, dbapi_conn, None)
        if disconnect:
            conn.invalidate(err)
        else:
            _rollback(dialect, conn)
        raise _wrap(engine, sql, parameters, err, disconnect) from err
    except BaseException:
        conn.invalidate()  # its state is unknown
        raise
    finally:
        conn.close()


def _execute_and_commit(
    dialect: Any, dbapi_conn: Any, sql: str, parameters: Any, fetch: bool
) -> tuple[int, list[Any]]:
    """The statement, then its COMMIT, through the dialect (the bench counts its calls);
    its rowcount, and its rows if `fetch`.

    On psycopg, with no transaction open, the statement runs in autocommit:
    one round trip, where psycopg's BEGIN, the statement and the COMMIT are
    three. A lone statement is its own transaction either way. Measured on
    PostgreSQL (a batch of 30 heartbeats, 100,000 rows, one thread, three
    alternated rounds): 1.44-1.56 -> 1.02-1.20 ms a batch, client CPU
    436-478 -> 263-315 us, server CPU 793-847 -> 607-713 us.
    """
    single = _autocommits(dialect, dbapi_conn)
    if single:
        dbapi_conn.autocommit = True
    try:
        cursor = dbapi_conn.cursor()
        dialect.do_execute(cursor, sql, parameters, None)
        rows = list(cursor.fetchall()) if fetch else []
        rowcount = cursor.rowcount
        cursor.close()
        dialect.do_commit(dbapi_conn)  # in autocommit, nothing to send
    finally:
        if single:  # a dead or busy connection is the caller's to invalidate
            with contextlib.suppress(dialect.loaded_dbapi.Error):
                dbapi_conn.autocommit = False
    return int(rowcount), rows


def _autocommits(dialect: Any, dbapi_conn: Any) -> bool:
    """Whether this statement may run in autocommit: a psycopg connection with no transaction."""
    if dialect.driver != "psycopg":
        return False
    return bool(
        dbapi_conn.info.transaction_status == dialect.loaded_dbapi.pq.TransactionStatus.IDLE
    )


class _Spares:
    """SQLite heartbeat connections, kept out of the pool: a LIFO of idle ones.

    On SQLite the write is ~20 us (no network), and a QueuePool checkout
    plus checkin cost 1.4x that before any SQL (callgrind: 65k instructions
    against the write's 47k), which kept the heartbeat at 2x the raw write.
    A deque's pop and append are atomic under the GIL, so a beat takes an
    idle connection or makes one (taken from the pool, then detached, so the
    connect listener's WAL and autocommit set-up applies) and gives it back.
    At most MAX_IDLE are kept: as many as beats ever ran at once, bounded.
    A connection that failed is closed, not kept; engine.dispose() closes
    the idle ones. Only for SQLite files: an in-memory database is one
    shared connection (StaticPool), and the servers' round trips dwarf the
    pool's cost (the heartbeat is 1.0-1.2x their raw write).
    """

    MAX_IDLE = 16

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.idle: deque[Any] = deque()
        event.listen(engine, "engine_disposed", lambda _engine: self.close())

    def write(self, sql: str, parameters: Any, fetch: bool) -> tuple[int, list[Any]]:
        dialect = self.engine.dialect
        try:
            dbapi_conn = self.idle.pop()
        except IndexError:
            token = _skip_ping.set(True)  # no server that could have gone away
            try:
                proxy = self.engine.raw_connection()
            finally:
                _skip_ping.reset(token)
            proxy.detach()
            dbapi_conn = proxy.dbapi_connection
        try:
            answer = _execute_and_commit(dialect, dbapi_conn, sql, parameters, fetch)
        except dialect.loaded_dbapi.Error as err:
            dbapi_conn.close()
            raise _wrap(
                self.engine, sql, parameters, err, dialect.is_disconnect(err, dbapi_conn, None)
            ) from err
        except BaseException:
            dbapi_conn.close()  # its state is unknown
            raise
        if len(self.idle) < self.MAX_IDLE:
            self.idle.append(dbapi_conn)
        else:
            dbapi_conn.close()
        return answer

    def close(self) -> None:
        while self.idle:
            try:
                self.idle.pop().close()
            except IndexError:  # another thread took the last one
                break


# MySQL/MariaDB ER_LOCK_DEADLOCK; PostgreSQL deadlock_detected. SQLite has one writer.
_DEADLOCK_ERRNO = 1213
_DEADLOCK_SQLSTATE = "40P01"


def is_deadlock(exc: BaseException) -> bool:
    """Whether the database chose this transaction as a deadlock's victim and rolled it back.

    The server's own advice is to run the transaction again: nothing of it
    was written. InnoDB picks a victim when several transactions insert the
    same unique key at once (each duplicate-key check takes a shared lock).
    """
    orig = getattr(exc, "orig", None)
    if orig is None:
        return False
    args = getattr(orig, "args", ())
    return (
        bool(args and args[0] == _DEADLOCK_ERRNO)
        or (getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)) == _DEADLOCK_SQLSTATE
    )


def _rollback(dialect: Any, conn: Any) -> None:
    """Return the connection clean: the pool has no reset-on-return (module docstring)."""
    try:
        dialect.do_rollback(conn.dbapi_connection)
    except dialect.loaded_dbapi.Error as err:
        conn.invalidate(err)


def _wrap(
    engine: Engine, sql: str | None, parameters: Any, err: Exception, disconnect: bool
) -> Any:
    return sa_exc.DBAPIError.instance(
        sql,
        parameters,
        err,
        engine.dialect.loaded_dbapi.Error,
        hide_parameters=engine.hide_parameters,
        connection_invalidated=disconnect,
        dialect=engine.dialect,
    )


def _checkout_ping(engine: Engine) -> Any:
    dialect = engine.dialect

    def ping(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        if _skip_ping.get():
            return
        try:
            dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as err:
            if dialect.is_disconnect(err, dbapi_conn, None):
                # The pool replaces this connection (and every older one) and
                # retries the checkout, as its own pre-ping does.
                raise sa_exc.InvalidatePoolError() from err
            raise

    return ping


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN, not the sqlite3 module.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")
