"""Engines configured the same way everywhere they are made.

A checkout ping keeps a restarted database from surfacing as stale-connection
errors (SQLAlchemy's pre-ping recipe, as a listener so the one hot path can
skip it: see unpinged()); SQLite gets WAL and a busy timeout so a reader never
blocks a heartbeat.

No reset-on-return: every connection comes back through a Connection, whose
close() rolls back a transaction it left open, and engine.begin() commits or
rolls back; the pool's extra ROLLBACK was a third round trip per heartbeat.

Every statement is bounded by `query_timeout`: a database behind a black hole
(a dead link, a frozen server, a firewall that drops packets) never answers,
and a client without its own deadline then waits for ever: heartbeats,
sweeps and HTTP requests all stop with it. PyMySQL has socket read/write
timeouts; libpq has none for answers, so psycopg connections are made of a
subclass whose every wait has a deadline (the connection is closed when it
passes, and the pool discards it), plus TCP keepalives and tcp_user_timeout
for a dead link and a server-side statement_timeout for a stuck server.

Every write goes through writing(): on SQLite a deferred transaction that
reads and then writes fails at once with "database is locked" when another
writer committed in between (it cannot upgrade its snapshot, so the busy
timeout does not apply); BEGIN IMMEDIATE takes the write lock up front and
waits for it instead. Reads stay deferred, so WAL readers never queue.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

# Set by unpinged(): the code running knows how to retry a dead connection.
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
        factory = _bounded_psycopg(query_timeout)
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


def _bounded_psycopg(query_timeout: float) -> Any:
    """A psycopg Connection class whose waits for the server end after query_timeout."""
    import psycopg

    wait_timeout = getattr(psycopg.errors, "_WaitTimeout", psycopg.OperationalError)

    class BoundedConnection(psycopg.Connection):  # type: ignore[type-arg]
        def wait(self, gen: Any, interval: Any = None, timeout: float | None = None) -> Any:
            kwargs: dict[str, Any] = {"timeout": query_timeout if timeout is None else timeout}
            if interval is not None:
                kwargs["interval"] = interval
            try:
                return super().wait(gen, **kwargs)
            except wait_timeout as exc:
                # The protocol is mid-statement: the connection cannot be
                # reused. Closed, SQLAlchemy sees a disconnect and drops it.
                self.close()
                raise psycopg.OperationalError(
                    f"no answer from the database within {kwargs['timeout']:g}s"
                ) from exc

    return BoundedConnection


def writing(engine: Engine) -> AbstractContextManager[Connection]:
    """A write transaction (see the module docstring for why it is not engine.begin())."""
    writer = engine.__dict__.get("_sg_writer")
    if writer is None:
        # execution_options() builds a new engine proxy each call: a tenth of
        # a heartbeat's Python time. One per engine, kept on the engine itself
        # (a weak mapping would leak: the proxy refers to its engine).
        writer = engine.__dict__.setdefault(
            "_sg_writer", engine.execution_options(sqlite_begin="IMMEDIATE")
        )
    return writer.begin()


@contextlib.contextmanager
def unpinged() -> Iterator[None]:
    """Checkouts in this block skip the ping: for callers that retry a dead connection.

    The caller runs an idempotent transaction and, on a DBAPIError with
    connection_invalidated, runs it once more: SQLAlchemy has by then
    invalidated every pooled connection older than the failure, so the retry
    gets a fresh one. Same outcome as pinging, one round trip less per call.
    """
    token = _skip_ping.set(True)
    try:
        yield
    finally:
        _skip_ping.reset(token)


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


def _sqlite_connect(dbapi_conn, _record) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN, not the sqlite3 module.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")
