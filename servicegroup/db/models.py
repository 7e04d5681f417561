"""The services table as a typed declarative model.

Only Alembic migrations create or change the schema; this model is what the
queries are written against, and a test proves both agree on every dialect.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import DateTime as DateTimeType

# MySQL's DATETIME drops fractions unless told to keep six digits.
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class server_now(FunctionElement[datetime]):
    """The database server's current UTC time, with sub-second precision.

    Heartbeats are stamped, and ages judged, with this one clock, so skew
    between the hosts that write and read cannot flip a service's state.
    """

    type = DateTimeType()
    inherit_cache = True


@compiles(server_now, "sqlite")
def _sqlite_now(
    element: server_now, compiler: SQLCompiler, **kw: Any
) -> str:  # CURRENT_TIMESTAMP has whole seconds only
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


@compiles(server_now, "postgresql")
def _pg_now(
    element: server_now, compiler: SQLCompiler, **kw: Any
) -> str:  # now() is frozen at transaction start
    return "timezone('utc', clock_timestamp())"


@compiles(server_now, "mysql")
@compiles(server_now, "mariadb")
def _mysql_now(element: server_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "UTC_TIMESTAMP(6)"


@compiles(server_now)
def _default_now(element: server_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


class ServiceRecord(Base):
    """One registered service.

    `deleted` is 0 for a live row and the row's id once soft-deleted, as in
    nova: (host, binary, deleted) is then unique among live rows on every
    dialect (MySQL has no partial indexes), and a deleted service can register
    again under the same name.
    """

    __tablename__ = "services"
    __table_args__ = (UniqueConstraint("host", "binary", "deleted"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    binary: Mapped[str] = mapped_column(String(255), index=True)
    topic: Mapped[str | None] = mapped_column(String(255))
    availability_zone: Mapped[str | None] = mapped_column(String(255))
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    report_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    disabled_reason: Mapped[str | None] = mapped_column(String(255))
    forced_down: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    last_seen_up: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    updated_at: Mapped[datetime | None] = mapped_column(Timestamp)
    deleted_at: Mapped[datetime | None] = mapped_column(Timestamp)
    deleted: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The state last written to the event stream (up/down/unknown), so the
    # sweeper's transitions are compare-and-set on SQL, not on one process's
    # memory: a new leader resumes from here without duplicating or losing.
    observed_state: Mapped[str | None] = mapped_column(String(16))
    observed_at: Mapped[datetime | None] = mapped_column(Timestamp)


class ServiceEvent(Base):
    """One state change of a service, append-only; `id` is the readers' cursor.

    Ids come from the event_sequence row, not from autoincrement: SQLite reuses
    rowids once the newest rows are pruned, which would rewind cursors.
    """

    __tablename__ = "service_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    service_id: Mapped[str] = mapped_column(String(36))
    host: Mapped[str] = mapped_column(String(255))
    binary: Mapped[str] = mapped_column(String(255))
    previous: Mapped[str | None] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    cause: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(Timestamp, index=True)
    # JSON object text; claim events say which claim and what happened to it.
    details: Mapped[str | None] = mapped_column(Text)


class EventSequence(Base):
    """One row per sequence; every appending transaction locks it first (see db/event_log.py)."""

    __tablename__ = "event_sequence"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Lease(Base):
    """A named lease, taken and renewed by compare-and-set against the SQL server's clock."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    epoch: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    expires_at: Mapped[datetime] = mapped_column(Timestamp)


class NotificationCursor(Base):
    """The last event id the leader sent to the message bus (leader/notifier.py).

    In SQL, not in the leader's memory, so a new leader (or the same one
    after a bus outage) resumes where the last send was confirmed; `epoch`
    is the sweeper lease's epoch that wrote it, for the operator's eye.
    """

    __tablename__ = "notification_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    epoch: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class ClaimRecord(Base):
    """The claim on one resource: who works on it, under which epoch (see db/claim_rows.py).

    One row per resource for ever: a released (or recovered, or deleted)
    claim keeps its row so that its epoch never goes back.
    """

    __tablename__ = "claims"
    __table_args__ = (UniqueConstraint("resource_type", "resource_id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(255))
    operation: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(36), index=True)
    incarnation: Mapped[str] = mapped_column(String(36))
    epoch: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), index=True)
    claimed_at: Mapped[datetime] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)
    details: Mapped[str | None] = mapped_column(Text)
    # Why the claim left its owner (owner_down, max_duration, force_released...).
    reason: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # When recovery may act next: the end of the grace period, or of a back-off.
    retry_at: Mapped[datetime | None] = mapped_column(Timestamp)


# The Core tables, for the statements built in records.py and its siblings.
services = cast(Table, ServiceRecord.__table__)
service_events = cast(Table, ServiceEvent.__table__)
event_sequence = cast(Table, EventSequence.__table__)
leases = cast(Table, Lease.__table__)
claims = cast(Table, ClaimRecord.__table__)
notification_cursors = cast(Table, NotificationCursor.__table__)
