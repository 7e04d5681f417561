"""The notifier's cursor in SQL: the last event id sent to the message bus.

One row per cursor name in `notification_cursors`, written only inside a
transaction that checked the sweeper lease (leader/notifier.py), so only the
current leader moves it, and a new leader starts from the row, never from
anyone's memory. Lock order, as everywhere: lease -> event_sequence -> this.
"""

from __future__ import annotations

from sqlalchemy import Connection, insert, select, update

from servicegroup.db import event_log
from servicegroup.db.models import notification_cursors, server_now

NAME = "notifications"


def read(conn: Connection, name: str = NAME) -> int | None:
    """The last id sent, or None before any leader with notifications on has seeded it."""
    stmt = select(notification_cursors.c.last_id).where(notification_cursors.c.name == name)
    found = conn.execute(stmt).first()
    return None if found is None else int(found[0])


def seed(conn: Connection, epoch: int, name: str = NAME) -> int:
    """Create the row at the event stream's end if it is missing; the cursor.

    At the end rather than 0: turning notifications on must not replay the
    whole retained history onto the bus (GET /v1/events has it). The last id
    is read under the append lock, so no event commits between it and the row.
    """
    event_log.lock_sequence(conn)
    found = read(conn, name)
    if found is not None:
        return found
    last = int(conn.execute(select(event_log.last_id_expression())).scalar_one())
    conn.execute(
        insert(notification_cursors).values(
            name=name, last_id=last, epoch=epoch, updated_at=server_now()
        )
    )
    return last


def advance(conn: Connection, last_id: int, epoch: int, name: str = NAME) -> None:
    """Move the cursor forward to `last_id`; never backwards."""
    conn.execute(
        update(notification_cursors)
        .where((notification_cursors.c.name == name) & (notification_cursors.c.last_id < last_id))
        .values(last_id=last_id, epoch=epoch, updated_at=server_now())
    )
