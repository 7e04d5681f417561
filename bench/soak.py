"""Soak: N services heartbeating once a second through the daemon for D minutes.

Not run in CI. Records every failed heartbeat (goal: 0) and the daemon's
resident memory once a minute (goal: flat within 10 percent of the first
minute's), prints a table and writes JSON.

    python bench/soak.py --services 1000 --minutes 10              # starts its own daemon on SQLite
    python bench/soak.py --daemon-url http://127.0.0.1:8797 --pid 1234 --services 1000 --minutes 10

The beats are spread evenly over each second from a few threads with
keep-alive connections, as a fleet of agents would send them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from servicegroup.db import migration  # noqa: E402
from servicegroup.db.engine import make_engine  # noqa: E402
from tests.functional.daemon import Daemon, free_port, write_config  # noqa: E402

WORKERS = 8
INTERVAL = 1.0


def rss_bytes(pid: int) -> int:
    """VmRSS from /proc: the daemon's resident memory now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def start_daemon(workdir: Path) -> Daemon:
    db = workdir / "soak.sqlite"
    url = f"sqlite:///{db}"
    port = free_port()
    # Ten-second down time: one late beat must not turn into a flap.
    config = write_config(
        workdir / "soak.conf", url, port, report_interval=INTERVAL, service_down_time=10
    )
    engine = make_engine(url)
    migration.upgrade(engine)
    engine.dispose()
    return Daemon(config, port, workdir / "daemon.log").start().wait_ready()


def register(client: httpx.Client, count: int, run: str) -> list[str]:
    ids = []
    for i in range(count):
        response = client.post(
            "/v1/services", json={"host": f"soak-{run}-{i:05d}", "binary": f"soak-{run}"}
        )
        response.raise_for_status()
        ids.append(response.json()["id"])
    return ids


class Beater(threading.Thread):
    """Heartbeats its share of services once per INTERVAL, evenly spread."""

    def __init__(self, url: str, ids: list[str], stop: threading.Event, token: str | None) -> None:
        super().__init__(daemon=True)
        self.url, self.ids, self.stop = url, ids, stop
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.sent = 0
        self.errors: Counter[str] = Counter()
        self.lock = threading.Lock()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=10.0) as client:
            step = INTERVAL / max(1, len(self.ids))
            next_at = time.monotonic()
            while not self.stop.is_set():
                for sid in self.ids:
                    if self.stop.is_set():
                        return
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        self.stop.wait(delay)
                    next_at += step
                    self.beat(client, sid)

    def beat(self, client: httpx.Client, sid: str) -> None:
        try:
            status = client.post(f"/v1/services/{sid}/heartbeat").status_code
            error = None if status == 204 else f"HTTP {status}"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        with self.lock:
            self.sent += 1
            if error:
                self.errors[error] += 1


def soak(url: str, pid: int, services: int, minutes: float, token: str | None) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, headers=headers, timeout=30.0) as client:
        ids = register(client, services, run)
        stop = threading.Event()
        shares = [ids[i::WORKERS] for i in range(WORKERS)]
        beaters = [Beater(url, share, stop, token) for share in shares if share]
        for beater in beaters:
            beater.start()
        rows = []
        started = time.monotonic()
        for minute in range(1, int(minutes) + 1 if minutes >= 1 else 2):
            stop.wait(max(0.0, started + 60 * min(minute, minutes) - time.monotonic()))
            up = client.get("/v1/services", params={"binary": f"soak-{run}", "state": "up"})
            rows.append(
                {
                    "minute": minute,
                    "rss_mib": round(rss_bytes(pid) / 2**20, 1),
                    "beats": sum(b.sent for b in beaters),
                    "errors": sum(sum(b.errors.values()) for b in beaters),
                    "up": len(up.json()["services"]) if up.status_code == 200 else None,
                }
            )
            print(
                "minute {minute:>3}  rss {rss_mib:>7.1f} MiB  beats {beats:>8}  "
                "errors {errors:>4}  up {up}".format(**rows[-1]),
                flush=True,
            )
        stop.set()
        for beater in beaters:
            beater.join()
    errors: Counter[str] = Counter()
    for beater in beaters:
        errors.update(beater.errors)
    first, peak = rows[0]["rss_mib"], max(r["rss_mib"] for r in rows)
    return {
        "services": services,
        "minutes": minutes,
        "beats": sum(b.sent for b in beaters),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "rss_first_mib": first,
        "rss_last_mib": rows[-1]["rss_mib"],
        "rss_peak_mib": peak,
        "rss_growth_pct": round(100 * (peak - first) / first, 1),
        "minutes_table": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--daemon-url", help="an already running daemon (else: one on SQLite)")
    parser.add_argument("--pid", type=int, help="the --daemon-url daemon's pid, for its RSS")
    parser.add_argument("--token", default=os.environ.get("SERVICEGROUP_TOKEN"))
    parser.add_argument("--json", type=Path, default=Path("soak.json"))
    args = parser.parse_args()
    if args.daemon_url and not args.pid:
        parser.error("--daemon-url needs --pid (the daemon's memory is what is measured)")
    daemon = None
    with tempfile.TemporaryDirectory(prefix="sg-soak-") as tmp:
        if args.daemon_url:
            url, pid = args.daemon_url, args.pid
        else:
            daemon = start_daemon(Path(tmp))
            assert daemon.proc is not None
            url, pid = daemon.url, daemon.proc.pid
        try:
            result = soak(url, pid, args.services, args.minutes, args.token)
        finally:
            if daemon is not None:
                daemon.stop()
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    ok = result["errors"] == 0 and result["rss_growth_pct"] <= 10
    print(
        f"{result['services']} services x {result['minutes']} min: {result['beats']} beats, "
        f"{result['errors']} errors, RSS {result['rss_first_mib']} -> {result['rss_last_mib']} MiB "
        f"(peak +{result['rss_growth_pct']}%): {'PASS' if ok else 'FAIL'}; JSON in {args.json}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
