"""Bare routes with group commit on PostgreSQL: the floors of the daemon's writes.

    python bench/bare_commit.py --url postgresql+psycopg://postgres@127.0.0.1/db --port 8800

What one process can do before any servicegroup code: the daemon's server
stack (uvicorn and Starlette), a route that queues each request and waits,
and one thread per route that writes whatever queued meanwhile as one
transaction on its own psycopg connection, then answers every request of
the batch. fleet.py sends each route the daemon's closed wrk loop, in the
same run. No records cache, no validation, no metrics, no sweeper. Serves
until killed.

- POST /v1/services/{id}/heartbeat: one `UPDATE services ... WHERE uuid =
  ANY(%s) AND deleted = 0 RETURNING uuid` in autocommit, one round trip;
  204, or 404 for an id no live row has. The floor issue 18 measured
  (10,991 beats/s then, with BEGIN and COMMIT around the UPDATE).
- POST /v1/services {"host", "binary"}: what a batch of registrations must
  write, in PostgreSQL's bulk forms: one `INSERT ... SELECT FROM unnest(...)
  ON CONFLICT DO NOTHING RETURNING`, a SELECT of the names that were there
  already (restarts), then, for the new ones, the sequence bump (the append
  lock) and one INSERT of their events from unnest, and the COMMIT; 201 for
  a new service, 200 for a restart, each with its id.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import sqlalchemy as sa
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

BEAT = (
    "UPDATE services SET report_count = report_count + 1, last_seen_up = now() "
    "WHERE uuid = ANY(%s) AND deleted = 0 RETURNING uuid"
)
NOW = "timezone('utc', clock_timestamp())"
REGISTER = (
    'INSERT INTO services (uuid, host, "binary", created_at, observed_state, observed_at) '
    f"SELECT gen_random_uuid()::text, h, b, {NOW}, 'down', {NOW} "
    "FROM unnest(%s::text[], %s::text[]) AS names(h, b) "
    'ON CONFLICT (host, "binary", deleted) DO NOTHING RETURNING uuid, host, "binary"'
)
REGISTERED = (
    'SELECT uuid, host, "binary" FROM services JOIN unnest(%s::text[], %s::text[]) AS n(h, b) '
    'ON host = h AND "binary" = b WHERE deleted = 0'
)
BUMP = "UPDATE event_sequence SET last_id = last_id + %s WHERE name = 'events' RETURNING last_id"
EVENTS = (
    'INSERT INTO service_events (id, service_id, host, "binary", previous, state, cause, '
    f"created_at) SELECT i, u, h, b, NULL, 'down', 'registered', {NOW} "
    "FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[]) AS e(i, u, h, b)"
)
Name = tuple[str, str]
Waiter = tuple[Any, asyncio.Future[Any], asyncio.AbstractEventLoop]


class GroupCommit:
    """Requests queued while a batch is written go out together as the next batch."""

    def __init__(
        self,
        url: str,
        write: Callable[[psycopg.Connection[Any], list[Any]], list[Any]],
        autocommit: bool = False,
    ):
        libpq = sa.make_url(url).set(drivername="postgresql")
        self.conn = psycopg.connect(
            libpq.render_as_string(hide_password=False), autocommit=autocommit
        )
        self.write = write
        self.queue: list[Waiter] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        threading.Thread(target=self.write_batches, daemon=True).start()

    def submit(self, key: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self.lock:
            self.queue.append((key, future, loop))
        self.ready.set()
        return future

    def write_batches(self) -> None:
        while True:
            self.ready.wait()
            with self.lock:
                batch, self.queue = self.queue, []
                self.ready.clear()
            if not batch:
                continue
            answers = self.write(self.conn, [key for key, _, _ in batch])
            self.conn.commit()
            for (_, future, loop), answer in zip(batch, answers, strict=True):
                loop.call_soon_threadsafe(future.set_result, answer)


def write_beats(conn: psycopg.Connection[Any], uuids: list[str]) -> list[bool]:
    """Whether each beat found its live row."""
    with conn.cursor() as cur:
        cur.execute(BEAT, (sorted(set(uuids)),))
        found = {row[0] for row in cur.fetchall()}
    return [uuid in found for uuid in uuids]


def write_registrations(conn: psycopg.Connection[Any], names: list[Name]) -> list[tuple[str, bool]]:
    """Each name's uuid and whether this batch created it; new ones with their events."""
    unique = sorted(set(names))
    hosts, binaries = [h for h, _ in unique], [b for _, b in unique]
    with conn.cursor() as cur:
        cur.execute(REGISTER, (hosts, binaries))
        new = {(h, b): u for u, h, b in cur.fetchall()}
        there = [name for name in unique if name not in new]
        old: dict[Name, str] = {}
        if there:
            cur.execute(REGISTERED, ([h for h, _ in there], [b for _, b in there]))
            old = {(h, b): u for u, h, b in cur.fetchall()}
        if new:
            cur.execute(BUMP, (len(new),))
            (last,) = cur.fetchone() or (0,)
            ids = list(range(last - len(new) + 1, last + 1))
            made = list(new.items())
            columns = ([u for _, u in made], [h for (h, _), _ in made], [b for (_, b), _ in made])
            cur.execute(EVENTS, (ids, *columns))
    answers, first = [], set()
    for name in names:
        created = name in new and name not in first
        first.add(name)
        answers.append((new.get(name) or old[name], created))
    return answers


def app(url: str) -> Starlette:
    # One statement: in autocommit, one round trip, as the daemon sends it.
    beats = GroupCommit(url, write_beats, autocommit=True)
    registrations = GroupCommit(url, write_registrations)

    async def heartbeat(request: Request) -> Response:
        found = await beats.submit(request.path_params["id"])
        return Response(status_code=204 if found else 404)

    async def register(request: Request) -> Response:
        body = json.loads(await request.body())
        uuid, created = await registrations.submit((body["host"], body["binary"]))
        return JSONResponse({"id": uuid}, status_code=201 if created else 200)

    return Starlette(
        routes=[
            Route("/v1/services/{id}/heartbeat", heartbeat, methods=["POST"]),
            Route("/v1/services", register, methods=["POST"]),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the records database (PostgreSQL)")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(
        app(args.url),
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="off",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
