"""What an open status page costs the daemon during a storm of transitions, old page against new.

    python bench/status_page.py --services 10000 --rounds 2 --seconds 20
    python bench/status_page.py --services 100000 --dialect postgresql --seconds 30
    python bench/status_page.py --quick                  # seconds; a smoke run

Why: the page (servicegroup/server/static/page.js) refreshes when the
events long poll brings news, and a refresh reads the whole fleet. One
daemon serves N services (registered and beaten once in process, with
service_down_time 600 s so nothing flaps by itself). A storm is then made
through the daemon: every 1/--storm-rate s one service of a rotating set
is forced down, and forced up again after --storm-rate/2 flips, so the
sweeper writes a steady stream of up -> down and down -> up events, as when
hosts stop beating and come back. During the storm one of three windows
runs, alternated for --rounds rounds so the machine's drift hits all alike
(after a storm window of warm-up, not counted):

- none: the storm alone, no page (the floor every page adds to);
- old: a page driven exactly as page.js was before the coalescing (a 100 ms
  timer on news, one refresh in flight, one more queued; a refresh is
  GET /v1/summary + GET /v1/services?sort=state&order=asc&limit=100 + GET
  /v1/claims, concurrently);
- new: a page driven as page.js is now (a refresh is GET
  /v1/services?...&summary=true + GET /v1/claims; news within
  EVENT_REFRESH_GAP of the last refresh, or while one is in flight, wait
  and make one refresh together).

Reported per window: the daemon's CPU (utime + stime from /proc) per
minute of storm, the events the page received, its refreshes and requests,
and requests per event; and the ratio old / new of the CPU the page adds
above "none". The page's scheduling is simulated here in Python (asyncio,
one client, the same requests in the same order), not run in a browser:
a browser's own CPU is not the daemon's.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # bench/run.py: Env, Target, daemon, finish

from servicegroup import ServiceGroup
from servicegroup.service import Registration

PAGE_SIZE = 100
LONG_POLL_SECONDS = 25
# page.js's constants, copied: the bench drives the page the way the page does.
OLD_NEWS_DELAY = 0.1
NEW_NEWS_DELAY = 0.1
EVENT_REFRESH_GAP = 1.0
SLOW_REFRESH_FACTOR = 3.0
WINDOWS = ("none", "old", "new")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Page:
    """One open page: its events long poll and its refreshes, old or new scheduling."""

    def __init__(self, url: str, policy: str) -> None:
        self.url, self.policy = url, policy
        self.requests = self.refreshes = self.events = 0
        self.refreshing = self.again = False
        self.scheduled: asyncio.TimerHandle | None = None
        self.pending: asyncio.Future[None] | None = None
        self.stopped = False
        self.last_end = 0.0
        self.last_took = 0.0
        self.cursor = 0
        self.client = httpx.AsyncClient(base_url=url, timeout=120)

    async def get(self, path: str) -> Any:
        self.requests += 1
        answer = await self.client.get(path)
        answer.raise_for_status()
        return answer.json()

    def services_path(self) -> str:
        path = f"/v1/services?sort=state&order=asc&offset=0&limit={PAGE_SIZE}"
        return path + ("&summary=true" if self.policy == "new" else "")

    async def refresh(self) -> None:
        if self.stopped:
            return
        if self.refreshing:
            self.again = True
            return
        self.refreshing = True
        started = time.monotonic()
        try:
            self.refreshes += 1
            if self.policy == "old":
                summary, _listed, _claims = await asyncio.gather(
                    self.get("/v1/summary"), self.get(self.services_path()), self.get("/v1/claims")
                )
            else:
                listed, _claims = await asyncio.gather(
                    self.get(self.services_path()), self.get("/v1/claims")
                )
                summary = listed["summary"]
            if not self.cursor:
                self.cursor = summary["event_cursor"]
        finally:
            self.refreshing = False
            self.last_end = time.monotonic()
            self.last_took = self.last_end - started
            if self.again:
                self.again = False
                if self.policy == "old":  # page.js called refresh() again at once
                    self.pending = asyncio.ensure_future(self.refresh())
                else:  # news waiting: page.js's soon(), after the gap
                    self.news()

    def news(self) -> None:
        """page.js's soon(): when the next refresh starts after events arrive."""
        loop = asyncio.get_running_loop()
        if self.policy == "old":
            if self.scheduled is None:
                self.scheduled = loop.call_later(OLD_NEWS_DELAY, self._fire)
            return
        if self.refreshing:
            self.again = True
            return
        if self.scheduled is not None:
            return
        gap = max(EVENT_REFRESH_GAP, SLOW_REFRESH_FACTOR * self.last_took)
        wait = max(NEW_NEWS_DELAY, self.last_end + gap - time.monotonic())
        self.scheduled = loop.call_later(wait, self._fire)

    def _fire(self) -> None:
        self.scheduled = None
        self.pending = asyncio.ensure_future(self.refresh())

    async def follow(self) -> None:
        while True:
            batch = await self.get(
                f"/v1/events?since={self.cursor}&wait={LONG_POLL_SECONDS}&limit=1000"
            )
            if batch["events"]:
                self.cursor = batch["cursor"]
                self.events += len(batch["events"])
                self.news()

    async def run(self, stop: asyncio.Event) -> None:
        await self.refresh()
        follower = asyncio.ensure_future(self.follow())
        await stop.wait()
        self.stopped = True
        follower.cancel()
        if self.scheduled is not None:
            self.scheduled.cancel()
        while self.refreshing:
            await asyncio.sleep(0.01)
        await self.client.aclose()


def storm(url: str, ids: list[str], rate: float, stop: threading.Event) -> int:
    """Force services down and up again through the daemon, `rate` flips a second."""
    flips = 0
    down: list[str] = []
    half = max(1, int(rate / 2))
    rotation = itertools.cycle(ids)
    with httpx.Client(base_url=url, timeout=60) as client:
        next_at = time.monotonic()
        while not stop.is_set():
            if len(down) >= half:
                uuid, forced = down.pop(0), False
            else:
                uuid, forced = next(rotation), True
                down.append(uuid)
            client.patch(f"/v1/services/{uuid}", json={"forced_down": forced}).raise_for_status()
            flips += 1
            next_at += 1 / rate
            stop.wait(max(0.0, next_at - time.monotonic()))
        for uuid in down:
            client.patch(f"/v1/services/{uuid}", json={"forced_down": False})
    return flips


def window(url: str, pid: int, policy: str, ids: list[str], rate: float, seconds: float) -> dict:
    stop_storm = threading.Event()
    flips: list[int] = []
    stormer = threading.Thread(target=lambda: flips.append(storm(url, ids, rate, stop_storm)))
    page = None if policy == "none" else Page(url, policy)

    async def drive() -> None:
        stop = asyncio.Event()
        task = asyncio.ensure_future(page.run(stop)) if page else None
        await asyncio.sleep(seconds)
        stop.set()
        if task:
            await task

    cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
    stormer.start()
    asyncio.run(drive())
    stop_storm.set()
    stormer.join()
    cpu, wall = cpu_seconds(pid) - cpu_before, time.monotonic() - wall_before
    result: dict[str, Any] = {
        "policy": policy,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "cpu_s_per_min": round(cpu / wall * 60, 1),
        "flips": flips[0] if flips else 0,
    }
    if page:
        result.update(
            events=page.events,
            refreshes=page.refreshes,
            requests=page.requests,
            requests_per_event=round(page.requests / page.events, 3) if page.events else None,
        )
    time.sleep(1.0)  # the last flips' events swept before the next window
    return result


def compare(target: bench.Target, n: int, rounds: int, seconds: float, rate: float) -> dict:
    with target.env.database(target.dialect) as url:
        opts = target.options(service_down_time=600.0, report_interval=60.0)
        with ServiceGroup.from_options(database__connection=url, **opts) as sg:
            registered = sg.register_many(
                [
                    Registration(f"compute-{i:06d}", "nova-compute", "compute", f"az{i % 4}", i % 3)
                    for i in range(n)
                ]
            )
            services = [service for service, _ in registered]
            sg.heartbeat_many(services)
        ids = [s.uuid for s in services[: max(10, int(rate * 5))]]
        timing = {
            "service_down_time": 600.0,
            "report_interval": 60.0,
            "events__sweep_interval": 0.2,
        }
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in WINDOWS}
        with bench.daemon(target, url, **timing) as proc:
            assert proc.proc is not None
            httpx.get(f"{proc.url}/v1/summary", timeout=120).raise_for_status()  # warm
            # A first storm window costs a fresh daemon up to 3x the next ones
            # (15 against 5.6 CPU s/min at 100,000): its caches fill. Not counted.
            window(proc.url, proc.proc.pid, "none", ids, rate, min(seconds, 10.0))
            for _ in range(rounds):
                for policy in WINDOWS:
                    result = window(proc.url, proc.proc.pid, policy, ids, rate, seconds)
                    print(result, file=sys.stderr, flush=True)
                    runs[policy].append(result)
    medians = {p: statistics.median(r["cpu_s_per_min"] for r in rs) for p, rs in runs.items()}
    added = {p: medians[p] - medians["none"] for p in ("old", "new")}
    return {
        "services": n,
        "storm_flips_per_s": rate,
        "seconds": seconds,
        "runs": runs,
        "median_cpu_s_per_min": medians,
        "page_cpu_s_per_min": {p: round(v, 1) for p, v in added.items()},
        "old_over_new": bench.ratio(added["old"], added["new"]),
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        f"{'target':<14}{'window':<7}{'CPU s/min':>10}{'events':>8}{'refreshes':>10}"
        f"{'requests':>9}{'req/event':>10}"
    ]
    for name, result in report["targets"].items():
        if "error" in result:
            lines.append(f"{name:<14}{result['error']}")
            continue
        for policy, runs in result["runs"].items():
            for r in runs:
                per_event = r.get("requests_per_event")
                lines.append(
                    f"{name:<14}{policy:<7}{r['cpu_s_per_min']:>10.1f}{r.get('events', '-'):>8}"
                    f"{r.get('refreshes', '-'):>10}{r.get('requests', '-'):>9}"
                    f"{'-' if per_event is None else f'{per_event:.2f}':>10}"
                )
        added = result["page_cpu_s_per_min"]
        lines.append(
            f"{name:<14}{result['services']} services: the page adds {added['old']:.1f} (old) and "
            f"{added['new']:.1f} (new) CPU s/min over the storm alone; old/new "
            f"{result['old_over_new']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument(
        "--dialect", action="append", help="sqlite (default), postgresql or mysql; repeatable"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0, help="each window's storm")
    parser.add_argument("--storm-rate", type=float, default=10.0, help="flips a second")
    parser.add_argument("--quick", action="store_true", help="500 services, 3 s, one round")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    n, rounds, seconds = args.services, args.rounds, args.seconds
    if args.quick:
        n, rounds, seconds = 500, 1, 3.0
    names = [f"db-{d}" for d in args.dialect or ["sqlite"]]
    report: dict[str, Any] = {"machine": bench.machine(), "targets": {}}

    def measure(target: bench.Target) -> dict[str, Any]:
        target.check()
        return compare(target, n, rounds, seconds, args.storm_rate)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    report["targets"], failed = bench.measure_targets(names, measure, log)
    bench.finish(report, table, args.json)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
