"""The tooz daemon's paced heartbeat window on a bare route: the floor of its p99.

    python bench/bare_tooz.py --url zookeeper://127.0.0.1:2181 --members 100

What a daemon of tooz members costs before any servicegroup code: N tooz
coordinators joined to one group, and an HTTP route (uvicorn and Starlette,
the daemon's own server stack) whose only work is the member's heartbeat()
on as many threads as the daemon has (drivers/tooz.py BEAT_THREADS).
No records, no cache, no sweeper. wrk sends it the daemon's paced window
(heartbeat.lua, the same rate and connections), in its own process, so the
GIL it contends for is only the route's and the members' sessions'.

On ZooKeeper each coordinator is a kazoo session with its own threads, so
this measures what that design costs in one process: the floor the
tooz-zookeeper daemon cannot go below. Prints one JSON object: wrk's
figures for each window, and the heartbeats each member answered (every
request must be one member's heartbeat).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import threading
import time
import uuid as uuid_mod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # bench/run.py: run_wrk, PACED_RATE
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tooz import coordination

from servicegroup.drivers.tooz import BEAT_THREADS

GROUP = b"bare-floor"
READY_TIMEOUT = 30.0


class Members:
    """N joined coordinators, by a uuid each, counting the heartbeats they answered."""

    def __init__(self, url: str, n: int) -> None:
        self.by_id: dict[str, coordination.CoordinationDriver] = {}
        self.locks: dict[str, threading.Lock] = {}
        self.beats: dict[str, int] = {}
        tag = uuid_mod.uuid4().hex[:8]
        try:
            for i in range(n):
                coord = coordination.get_coordinator(url, f"bare-{tag}-{i}".encode())
                coord.start()
                key = str(uuid_mod.uuid4())
                self.by_id[key], self.locks[key], self.beats[key] = coord, threading.Lock(), 0
            first = next(iter(self.by_id.values()))
            with contextlib.suppress(coordination.GroupAlreadyExist):
                first.create_group(GROUP).get()
            for coord in self.by_id.values():
                coord.join_group(GROUP).get()
        except BaseException:
            self.close()
            raise

    def beat(self, key: str) -> None:
        with self.locks[key]:  # one call at a time per coordinator, as the daemon's driver
            self.by_id[key].heartbeat()
            self.beats[key] += 1

    def close(self) -> None:
        for coord in self.by_id.values():
            coord.stop()


def serve(members: Members) -> tuple[uvicorn.Server, threading.Thread, str]:
    pool = ThreadPoolExecutor(BEAT_THREADS, thread_name_prefix="heartbeat")

    async def heartbeat(request: Request) -> Response:
        key = request.path_params["id"]
        if key not in members.by_id:
            return Response(status_code=404)
        await asyncio.get_running_loop().run_in_executor(pool, members.beat, key)
        return Response(status_code=204)

    app = Starlette(routes=[Route("/v1/services/{id}/heartbeat", heartbeat, methods=["POST"])])
    port = bench.free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + READY_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the bare route did not start on port {port}")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="a tooz backend URL")
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--rate", type=int, default=bench.PACED_RATE, help="requests/s offered")
    parser.add_argument("--seconds", type=float, default=10.0, help="each wrk window")
    parser.add_argument("--windows", type=int, default=1)
    args = parser.parse_args(argv)
    if args.members < 1 or args.rate < 1 or args.seconds <= 0 or args.windows < 1:
        parser.error("--members, --rate and --windows must be >= 1, --seconds > 0")
    if bench.WRK is None:
        print("bare_tooz: wrk is not installed (Debian package wrk)", file=sys.stderr)
        return 1
    try:
        members = Members(args.url, args.members)
    except (coordination.ToozError, ValueError) as exc:
        where = f"{args.members} members at {args.url}"
        print(f"bare_tooz: cannot join {where}: {exc}", file=sys.stderr)
        return 1
    try:
        server, thread, base = serve(members)
        with tempfile.TemporaryDirectory(prefix="sg-bare-") as tmp:
            ids = Path(tmp) / "ids.txt"
            ids.write_text("\n".join(members.by_id) + "\n")
            windows = [
                bench.run_wrk(base, ids, args.seconds, 50, rate=args.rate)
                for _ in range(args.windows)
            ]
        server.should_exit = True
        thread.join(READY_TIMEOUT)
    finally:
        members.close()
    result = {
        "members": args.members,
        "offered_per_s": args.rate,
        "windows": windows,
        "heartbeats": sum(members.beats.values()),
        "members_beaten": sum(1 for n in members.beats.values() if n),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
