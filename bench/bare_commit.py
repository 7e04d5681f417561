"""A bare heartbeat route with group commit on PostgreSQL: the floor of the daemon's beats/s.

    python bench/bare_commit.py --url postgresql+psycopg://postgres@127.0.0.1/db --port 8800

What one process can do before any servicegroup code: the daemon's server
stack (uvicorn and Starlette), a route that queues each beat's id and waits,
and one thread that writes whatever queued meanwhile as one
`UPDATE services ... WHERE uuid = ANY(%s) AND deleted = 0 RETURNING uuid` and
its COMMIT on one psycopg connection, then answers every beat of the batch
(204, or 404 for an id no live row has). That is the floor issue 18 measured
(10,991 beats/s then); fleet.py sends it the daemon's closed wrk loop over
the same fleet, in the same run. No records cache, no validation, no
metrics, no sweeper. Serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import threading

import psycopg
import sqlalchemy as sa
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BEAT = (
    "UPDATE services SET report_count = report_count + 1, last_seen_up = now() "
    "WHERE uuid = ANY(%s) AND deleted = 0 RETURNING uuid"
)
Waiter = tuple[str, asyncio.Future[bool], asyncio.AbstractEventLoop]


class GroupCommit:
    """Beats queued while a batch is written go out together as the next batch."""

    def __init__(self, url: str) -> None:
        libpq = sa.make_url(url).set(drivername="postgresql")
        self.conn = psycopg.connect(libpq.render_as_string(hide_password=False))
        self.queue: list[Waiter] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        threading.Thread(target=self.write_batches, daemon=True).start()

    def submit(self, uuid: str) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        with self.lock:
            self.queue.append((uuid, future, loop))
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
            uuids = sorted({uuid for uuid, _, _ in batch})
            with self.conn.cursor() as cur:
                cur.execute(BEAT, (uuids,))
                found = {row[0] for row in cur.fetchall()}
            self.conn.commit()
            for uuid, future, loop in batch:
                loop.call_soon_threadsafe(future.set_result, uuid in found)


def app(commit: GroupCommit) -> Starlette:
    async def heartbeat(request: Request) -> Response:
        found = await commit.submit(request.path_params["id"])
        return Response(status_code=204 if found else 404)

    return Starlette(routes=[Route("/v1/services/{id}/heartbeat", heartbeat, methods=["POST"])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the records database (PostgreSQL)")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(
        app(GroupCommit(args.url)),
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
