"""Engines configured the same way everywhere they are made.

pool_pre_ping keeps a restarted database from surfacing as stale-connection
errors; SQLite gets WAL and a busy timeout so a reader never blocks a heartbeat.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
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
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
