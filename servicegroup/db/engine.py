"""Engines configured the same way everywhere they are made.

pool_pre_ping keeps a restarted database from surfacing as stale-connection
errors; SQLite gets WAL and a busy timeout so a reader never blocks a heartbeat.

Every write goes through writing(): on SQLite a deferred transaction that
reads and then writes fails at once with "database is locked" when another
writer committed in between (it cannot upgrade its snapshot, so the busy
timeout does not apply); BEGIN IMMEDIATE takes the write lock up front and
waits for it instead. Reads stay deferred, so WAL readers never queue.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool


def make_engine(url: str, connect_timeout: float = 5.0, pool_size: int = 10) -> Engine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    connect_args: dict[str, Any] = {}
    if backend == "sqlite":
        connect_args = {"check_same_thread": False, "timeout": connect_timeout}
        if parsed.database in (None, "", ":memory:"):
            # One shared connection, or every checkout would see an empty database.
            kwargs["poolclass"] = StaticPool
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_recycle=3600)
        if backend == "postgresql":
            connect_args["connect_timeout"] = max(1, round(connect_timeout))
        elif backend in ("mysql", "mariadb"):
            connect_args["connect_timeout"] = max(1, round(connect_timeout))
            connect_args.setdefault("charset", "utf8mb4")
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def writing(engine: Engine) -> AbstractContextManager[Connection]:
    """A write transaction (see the module docstring for why it is not engine.begin())."""
    return engine.execution_options(sqlite_begin="IMMEDIATE").begin()


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
