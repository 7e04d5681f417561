"""The daemon's paced heartbeat window without the daemon: the raw floor of its p99.

    python bench/paced_sql.py --url postgresql+psycopg://... --ids ids.txt --rate 1050

The heartbeat UPDATE written by hand (run.raw_beat_sql), with the driver's
client library, sent straight to the database at the rate the daemon's paced
wrk window offers, over as many connections as the daemon has group-commit
writers (server/group_commit.py WRITERS), one write per beat: what the daemon's
batches improve on. Paced like heartbeat.lua (wrk2's
send slots): write k is due at start + k / rate, and its latency counts from
when it was due, so a stalled database shows up as queueing here exactly as
in the daemon's window. Its own process, so the GIL it takes is not the
bench's. Prints one JSON object: the achieved rate, p50/p90/p99 and the rows
the UPDATEs changed (each write must change exactly one).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # bench/run.py: raw_beat_sql, pct
import sqlalchemy as sa

from servicegroup.db.engine import make_engine
from servicegroup.server.group_commit import WRITERS


class WriteFailed(Exception):
    """A paced write failed: the window's figures would leave it out."""


def paced_writes(url: str, ids: list[str], rate: float, seconds: float, connections: int) -> dict:
    engine = make_engine(url, pool_size=connections)
    sql, params_for = bench.raw_beat_sql(engine)
    conns = [engine.raw_connection() for _ in range(connections)]
    slots = itertools.count()  # next() on a count is atomic under the GIL
    start = time.perf_counter() + 0.05
    latencies: list[list[float]] = [[] for _ in conns]
    changed = [0] * len(conns)
    failures: list[BaseException] = []

    def work(i: int) -> None:
        dbapi = conns[i].dbapi_connection
        mine = latencies[i]
        while not failures:
            k = next(slots)
            due = start + k / rate
            if k >= rate * seconds:
                return
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            try:
                cur = dbapi.cursor()
                cur.execute(sql, params_for(ids[k % len(ids)]))
                changed[i] += cur.rowcount
                cur.close()
                dbapi.commit()
            except Exception as exc:  # a window with lost writes measures nothing
                failures.append(exc)
                return
            mine.append(time.perf_counter() - due)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(conns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    for conn in conns:
        conn.close()
    engine.dispose()
    if failures:
        raise WriteFailed(failures[0])
    every = [lat for mine in latencies for lat in mine]
    return {
        "requests": len(every),
        "per_s": round(len(every) / took, 1),
        "connections": connections,
        "rows_changed": sum(changed),
        **{f"p{q}_ms": bench.ms(bench.pct(every, q)) for q in (50, 90, 99)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the database's SQLAlchemy URL")
    parser.add_argument("--ids", type=Path, required=True, help="service uuids, one per line")
    parser.add_argument("--rate", type=float, default=bench.PACED_RATE, help="writes/s offered")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=WRITERS)
    args = parser.parse_args(argv)
    ids = args.ids.read_text().split()
    if not ids:
        parser.error(f"--ids: {args.ids} names no service")
    if args.rate <= 0 or args.seconds <= 0 or args.connections < 1:
        parser.error("--rate and --seconds must be > 0, --connections >= 1")
    try:
        result = paced_writes(args.url, ids, args.rate, args.seconds, args.connections)
    except (WriteFailed, sa.exc.SQLAlchemyError) as exc:
        print(f"paced_sql: cannot write to {args.url}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
