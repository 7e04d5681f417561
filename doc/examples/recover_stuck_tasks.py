#!/usr/bin/env python3
"""Reset the tasks a dead host left half done, by following servicegroup's events.

A scheduler keeps in-flight tasks in its own database, each owned by a host.
When a host's service goes down, its tasks in a transient state (e.g.
"rebuilding") will never finish; this consumer moves them back to a stable
state as soon as the down event arrives.

Exactly-once without help from the server: the cursor is stored in the same
SQL transaction as the task updates, so after a crash the consumer resumes
from the last event it fully handled, and handling an event again is harmless
anyway (the UPDATE only matches tasks still stuck).

    python doc/examples/recover_stuck_tasks.py --url http://127.0.0.1:8797 --db tasks.sqlite
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import time

import httpx

LOG = logging.getLogger("recover")

# Transient state -> the stable state a task goes back to when its host dies.
RECOVER = {"rebuilding": "active", "migrating": "active", "spawning": "error"}
WAIT = 30.0  # long-poll seconds; the server answers at once when events exist


def open_db(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS tasks (
            id INTEGER PRIMARY KEY, host TEXT NOT NULL, task_state TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS consumer (
            name TEXT PRIMARY KEY, cursor INTEGER NOT NULL);
        INSERT OR IGNORE INTO consumer VALUES ('recover_stuck_tasks', 0);
        """
    )
    return db


def handle(db: sqlite3.Connection, event: dict) -> int:
    """Apply one event and advance the cursor, atomically; tasks reset."""
    reset = 0
    db.execute("BEGIN IMMEDIATE")
    try:
        # A death: down from up (or from unknown). Registration is None -> down.
        if event["state"] == "down" and event["previous"] in ("up", "unknown"):
            for stuck, stable in RECOVER.items():
                reset += db.execute(
                    "UPDATE tasks SET task_state = ? WHERE host = ? AND task_state = ?",
                    (stable, event["host"], stuck),
                ).rowcount
        db.execute(
            "UPDATE consumer SET cursor = ? WHERE name = 'recover_stuck_tasks'", (event["id"],)
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    if reset:
        LOG.warning(
            "%s on %s went down (%s): reset %d stuck task(s)",
            event["binary"],
            event["host"],
            event["cause"],
            reset,
        )
    return reset


def follow(url: str, db: sqlite3.Connection, binary: str | None) -> None:
    (cursor,) = db.execute("SELECT cursor FROM consumer").fetchone()
    params: dict = {"wait": WAIT}
    if binary:
        params["binary"] = binary
    with httpx.Client(base_url=url, timeout=WAIT + 10) as http:
        while True:
            try:
                reply = http.get("/v1/events", params={**params, "since": cursor})
                reply.raise_for_status()
            except httpx.HTTPError as exc:
                LOG.warning("cannot read events (%s); retrying", exc)
                time.sleep(1)
                continue
            body = reply.json()
            for event in body["events"]:
                handle(db, event)
            cursor = body["cursor"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8797", help="servicegroup daemon")
    parser.add_argument("--db", required=True, help="SQLite file holding the tasks table")
    parser.add_argument("--binary", help="only react to services of this binary")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    follow(args.url, open_db(args.db), args.binary)


if __name__ == "__main__":
    main()
