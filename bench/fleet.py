"""The daemon at fleet size: 100,000 services on one driver, from registration to idle.

    python bench/fleet.py --driver db-sqlite,memcached --services 100000 --json fleet.json
    python bench/fleet.py --quick --driver db-sqlite        # seconds; what the test suite runs
    python bench/fleet.py --daemon-pythonpath /tmp/old-tree --driver zookeeper   # another tree

Why: run.py measures 10,000 services written straight to the backend. A
deployment's daemon meets its fleet over HTTP, registrations first, keeps all
of it in memory, and lists, scrapes and sweeps all of it. This measures that
life at --services N, per target (run.py's names), in this order, with one
daemon (service_down_time 600 s, report_interval 60 s: nothing flaps):

1. bare_route: the floor. A bare uvicorn + Starlette app in its own process
   (this script with --bare-route PORT) answering 204 to every heartbeat and
   doing nothing else, under the heartbeat window's wrk closed loop.
2. registrations over HTTP (register.lua, wrk -c50): new hosts (201) in a
   closed loop; restarts of hosts registered already (200) in a closed loop;
   new hosts paced at REGISTER_RATE offered. Answers counted by status. On
   db-postgresql, new hosts in a closed loop on bare_commit.py too: the
   rows and events written in bulk on a bare route, the floor.
3. the fleet: topped up to N in one bulk INSERT (observed_state "down", as a
   registration leaves it), then one heartbeat each through the daemon
   (run.beat_each, timed), then the sweeper's first transitions waited for
   (run.settle, capped by --settle-cap).
4. heartbeats over all N ids (heartbeat.lua): a closed loop, then paced at
   BEAT_RATE offered. On db-postgresql, the same closed loop on
   bare_commit.py too: group commit on a bare route, the floor.
5. reads: GET /v1/services?binary=nova-compute, GET /metrics and GET
   /metrics?per_service=not_up, the median wall time of READS each, and
   their body sizes; then get_all against its raw floor, in process.
6. the daemon's RSS after the reads.
7. idle CPU: the daemon's utime + stime over --idle-seconds with no load.
8. detection (bench_detection): a new daemon with service_down_time
   --detect-down-time (60 s, nova's default) while wrk beats the whole fleet
   at twice the rate that keeps it up; a few services stop beating, and the
   time to read them down and to get their events is measured, with every
   false down of the beating fleet.

Every window also records the daemon's CPU during it (so CPU per request),
the 1-minute load average before it, and "others": the cores the rest of the
machine used meanwhile (busy time minus this bench's process tree and the SQL
servers). The machine is shared: each window waits (--quiet-cap at most)
for 2 s in which others used at most --max-others cores, and a window during
which they used more is run again, up to --retries times.

--daemon-pythonpath DIR runs the daemon from another source tree (a before
commit): PYTHONPATH=DIR and its working directory DIR. The daemon prints the
servicegroup it imported, and the report says it.

--workers N runs the daemon under test with `[api] workers = N`: its CPU and
RSS are then those of the whole process tree, the supervisor and its forked
workers. Steps 1 and 8 (the bare route, detection's new daemon) stay one
process.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid as uuid_mod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import run as bench  # bench/run.py: Env, Target, run_wrk, beat_each, settle, rss_mb
import sqlalchemy as sa
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from servicegroup import conf as sg_conf
from servicegroup.api import ServiceGroup
from servicegroup.db import event_log
from servicegroup.db.engine import make_engine
from servicegroup.db.models import service_events, services
from servicegroup.service import Service, State
from tests.functional.daemon import Daemon, free_port

TARGETS = ("db-sqlite", "db-postgresql", "db-mysql", "memcached", "zookeeper")
DEFAULT_TARGETS = ("db-sqlite", "db-postgresql", "memcached", "zookeeper")
BINARY = "nova-compute"
TIMING = {"report_interval": 60.0, "service_down_time": 600.0}
# The binary bare_commit.py's registrations are made under, and deleted after.
FLOOR_BINARY = "bare-floor"
# Seconds between step 8's polls for a fleet with none down.
SETTLE_POLL = 5.0
# Step 8's down time: nova's default service_down_time (--quick: 5 s).
DETECT_DOWN_TIME = 60.0
# A few of the fleet's own binary: all of a binary going down at once would be
# held by the mass-down protection ([events] mass_down_*), a fleet event.
DETECT_VICTIMS = 5
SWEEP_INTERVAL = {o.name: o.default for o in sg_conf.events_opts}["sweep_interval"]
CONNECTIONS = 50
REGISTER_RATE = 1_000
BEAT_RATE = 10_000
READS = 3
BARE_IDS = 1_000
REGISTER_LUA = Path(__file__).with_name("register.lua")
BARE_COMMIT = Path(__file__).with_name("bare_commit.py")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SQL_SERVERS = {"postgres", "mariadbd", "mysqld"}
# The sweeper's own lines of /metrics: its last sweep's duration, the transitions it wrote.
SWEEPER_METRICS = (
    r"^servicegroup_(sweep_\w+|transitions\w*|scrape_duration_seconds)(\{[^}]*\})? (\S+)$"
)
# The daemon's first line on stderr: which servicegroup it imported.
BOOT = (
    "import sys, servicegroup; "
    "print('servicegroup imported from', servicegroup.__file__, file=sys.stderr, flush=True); "
    "from servicegroup.server.__main__ import main; sys.exit(main())"
)


@dataclass
class Options:
    services: int
    seconds: float
    settle_cap: float
    idle_seconds: float
    max_others: float
    retries: int
    quiet_cap: float
    daemon_pythonpath: Path | None
    detect_down_time: float
    workers: int = 1


# -- CPU accounting ---------------------------------------------------------------


@dataclass
class Cpu:
    """CPU seconds used so far: the machine's, this bench's process tree's, the SQL servers'."""

    at: float
    busy: float
    ours: float
    sql: float


def proc_stats() -> Iterator[tuple[int, str, list[str]]]:
    """(pid, comm, the fields after comm) of every process; those gone meanwhile left out."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                text = (entry / "stat").read_text()
                comm = text[text.index("(") + 1 : text.rindex(")")]
                yield int(entry.name), comm, text[text.rindex(")") + 2 :].split()


def cpu_now() -> Cpu:
    at = time.monotonic()
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    stats = {pid: (comm, fields) for pid, comm, fields in proc_stats()}
    children: dict[int, list[int]] = {}
    for pid, (_, fields) in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    tree, todo = set(), [os.getpid()]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += children.get(pid, [])
    # utime, stime, and the waited-for children's cutime, cstime (fields 14-17).
    ours = sum(sum(map(int, stats[pid][1][11:15])) for pid in tree if pid in stats)
    sql = sum(
        sum(map(int, fields[11:13]))
        for pid, (comm, fields) in stats.items()
        if comm in SQL_SERVERS and pid not in tree
    )
    busy = user + nice + system + irq + softirq + steal
    return Cpu(at, busy / CLOCK_TICKS, ours / CLOCK_TICKS, sql / CLOCK_TICKS)


def others_cores(before: Cpu, after: Cpu) -> float:
    """The cores the rest of the machine used between two readings."""
    others = (after.busy - before.busy) - (after.ours - before.ours) - (after.sql - before.sql)
    return round(max(0.0, others) / max(1e-6, after.at - before.at), 2)


def process_tree(pid: int) -> list[int]:
    """pid and its descendants: a daemon with `[api] workers` is a supervisor and its workers."""
    children: dict[int, list[int]] = {}
    for child, _comm, fields in proc_stats():
        children.setdefault(int(fields[1]), []).append(child)
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def process_cpu(pid: int) -> float:
    """utime + stime of a process tree (every thread of pid and its descendants), in seconds."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):  # gone meanwhile
            text = Path(f"/proc/{member}/stat").read_text()
            fields = text[text.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def tree_rss_mb(pid: int) -> float:
    """The RSS of a process tree, summed (each worker is a whole daemon)."""
    return round(sum(bench.rss_mb(member) for member in process_tree(pid)), 1)


@dataclass
class Windows:
    """Runs measured windows, each again while the rest of the machine was busy during it."""

    max_others: float
    retries: int
    quiet_cap: float
    log: Callable[[str], None]
    # The event log's last id: the events the sweeper wrote during a window.
    events: Callable[[], int] | None = None

    def quiet(self) -> float:
        """Wait, at most quiet_cap, for 2 s in which others used at most max_others cores."""
        start = time.monotonic()
        while time.monotonic() - start < self.quiet_cap:
            before = cpu_now()
            time.sleep(2)
            if others_cores(before, cpu_now()) <= self.max_others:
                break
            time.sleep(5)
        return round(time.monotonic() - start, 1)

    def run(self, name: str, measure: Callable[[], dict[str, Any]], pid: int) -> dict[str, Any]:
        for attempt in range(1, self.retries + 2):
            waited = self.quiet()
            load1 = round(os.getloadavg()[0], 2)
            events_before = self.events() if self.events else 0
            before, pid_before = cpu_now(), process_cpu(pid)
            result = measure()
            after, pid_after = cpu_now(), process_cpu(pid)
            took = after.at - before.at
            result["window"] = {
                "attempt": attempt,
                "quiet_wait_s": waited,
                "load1_before": load1,
                "others_cores": others_cores(before, after),
                "sql_cores": round((after.sql - before.sql) / took, 2),
                "daemon_cores": round((pid_after - pid_before) / took, 2),
            }
            if self.events:
                result["window"]["events_written"] = self.events() - events_before
            if result.get("requests"):
                cpu_us = (pid_after - pid_before) / result["requests"] * 1e6
                result["window"]["daemon_cpu_us_per_request"] = round(cpu_us)
            others = result["window"]["others_cores"]
            if others <= self.max_others or attempt > self.retries:
                self.log(f"  {name}: {summary(result)}")
                return result
            self.log(f"  {name}: others used {others} cores (load {load1}), again")
        raise AssertionError("unreachable")


def summary(result: dict[str, Any]) -> str:
    w = result["window"]
    rate = f"{result['per_s']:.0f}/s p99 {result['p99_ms']} ms, " if "per_s" in result else ""
    return f"{rate}daemon {w['daemon_cores']} cores, others {w['others_cores']}"


# -- wrk with register.lua ----------------------------------------------------------


def parse_wrk(out: str) -> dict[str, Any]:
    """wrk's figures as run.run_wrk reports them, and register.lua's count of each status."""
    status = {code: int(n) for code, n in re.findall(r"^status (\d+) (\d+)$", out, re.M)}
    return {**bench.parse_wrk(out), "status": status}


def run_register(
    url: str,
    seconds: float,
    rate: int | None = None,
    hosts_file: Path | None = None,
    binary: str = BINARY,
) -> dict[str, Any]:
    """One register.lua window: new hosts (a fresh prefix), or the hosts in hosts_file."""
    env = {
        **os.environ,
        "SG_PREFIX": f"reg-{uuid_mod.uuid4().hex[:8]}",
        "SG_HOSTS": str(hosts_file or ""),
        "SG_BINARY": binary,
        "SG_RATE": str(rate or ""),
        "SG_THREADS": str(bench.WRK_THREADS),
    }
    argv = [bench.WRK, f"-t{bench.WRK_THREADS}", f"-c{CONNECTIONS}"]
    argv += [f"-d{max(1, round(seconds))}s", "--latency", "-s", str(REGISTER_LUA), url]
    proc = subprocess.run(
        argv, env=env, capture_output=True, text=True, check=True, timeout=seconds + 60
    )
    result = parse_wrk(proc.stdout)
    if rate:
        result["offered_per_s"] = rate
    return result


# -- the records database, from the harness's side ------------------------------------


class Records:
    """The daemon's services table, read and filled by the harness."""

    live = (services.c.binary == BINARY) & (services.c.deleted == 0)

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)

    def close(self) -> None:
        self.engine.dispose()

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).where(self.live)).scalar_one()

    def count_settled(self, timeout: float = 10.0) -> int:
        """The count once the requests wrk left in flight have landed: two equal reads."""
        last, deadline = self.count(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = self.count()
            if now == last:
                break
            last = now
        return last

    def last_event(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.max(service_events.c.id))).scalar() or 0

    def downs_since(self, event_id: int, victims: list[str]) -> int:
        """The fleet's down events after `event_id` but the victims': each a false down."""
        where = (service_events.c.id > event_id) & (service_events.c.binary == BINARY)
        where &= (service_events.c.state == "down") & service_events.c.service_id.not_in(victims)
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).where(where)).scalar_one()

    def delete_binary(self, binary: str) -> None:
        """Delete a binary's rows outright (not the soft delete: the table is the bench's)."""
        with self.engine.begin() as conn:
            conn.execute(services.delete().where(services.c.binary == binary))

    def column(self, column: sa.Column[str]) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(column).where(self.live)).scalars())

    def top_up(self, n: int) -> int:
        """Insert n services and their events in one transaction, as a registration would."""
        now = datetime.now(UTC).replace(tzinfo=None)
        rows = [
            {
                "uuid": str(uuid_mod.uuid4()),
                "host": f"fleet-{i:06d}.example.org",
                "binary": BINARY,
                "topic": "compute",
                "availability_zone": f"az{i % 3}",
                "created_at": now,
                "observed_state": "down",
                "observed_at": now,
            }
            for i in range(n)
        ]
        with self.engine.begin() as conn:
            if rows:
                conn.execute(services.insert(), rows)
                # Their "registered" events too, as register_many writes them:
                # the sweeper learns of new services from events between its
                # full reads (leader/schedule.py), so rows without them would
                # wait for the next full_sweep_interval.
                event_log.lock_sequence(conn)
                event_log.append(
                    conn,
                    [
                        event_log.Draft(r["uuid"], r["host"], BINARY, None, "down", "registered")
                        for r in rows
                    ],
                )
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("ANALYZE services"))  # no autovacuum here: see run.py
        return n


# -- the processes: the daemon, the bare route ------------------------------------------


class FleetDaemon(Daemon):
    """The daemon under test, from this tree or from another (pythonpath); it says which."""

    def __init__(self, config_file: Path, port: int, log_file: Path, pythonpath: Path | None):
        argv = [sys.executable, "-c", BOOT, "--config-file", str(config_file)]
        super().__init__(config_file, port, log_file, argv)
        self.pythonpath = pythonpath

    def start(self) -> FleetDaemon:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.pythonpath:
            env["PYTHONPATH"] = str(self.pythonpath)
        # -c puts the working directory first on sys.path: it must be the tree's too.
        cwd = self.pythonpath or bench.ROOT
        with open(self.log_file, "wb") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log, env=env, cwd=cwd)
        return self

    def imported(self) -> str:
        found = re.search(r"^servicegroup imported from (.*)$", self.log(), re.M)
        return found.group(1) if found else "?"


@contextlib.contextmanager
def daemon(
    target: bench.Target,
    url: str,
    pythonpath: Path | None,
    timing: dict[str, float] = TIMING,
    workers: int = 1,
) -> Iterator[FleetDaemon]:
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="sg-fleet-daemon-", dir=target.env.tmp))
    conf = workdir / "servicegroup.conf"
    options = {**target.options(**timing), "api__workers": str(workers)}
    conf.write_text(bench.config_text(url, port, options))
    with bench.running(FleetDaemon(conf, port, workdir / "daemon.log", pythonpath).start()) as proc:
        where = Path(proc.imported()).resolve()
        if pythonpath and not where.is_relative_to(pythonpath.resolve()):
            raise RuntimeError(f"the daemon imported {where}, not servicegroup from {pythonpath}")
        yield proc


def bare_route_app() -> Starlette:
    async def heartbeat(request: Request) -> Response:
        return Response(status_code=204)

    return Starlette(routes=[Route("/v1/services/{id}/heartbeat", heartbeat, methods=["POST"])])


def serve_bare_route(port: int) -> int:
    """The --bare-route mode: uvicorn configured as the daemon's serve() configures it."""
    uvicorn.run(
        bare_route_app(),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="off",
    )
    return 0


@contextlib.contextmanager
def bare_route(script: list[str] | None = None) -> Iterator[tuple[str, int]]:
    """A bare route in its own process, `script` + --port PORT (default: this
    script's --bare-route PORT), once it answers: its URL and pid."""
    port = free_port()
    argv = [*script, "--port", str(port)] if script else [__file__, "--bare-route", str(port)]
    proc = subprocess.Popen([sys.executable, *argv])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.post(f"{url}/v1/services/x/heartbeat", timeout=1).status_code < 500:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bare route did not start on port {port}")
            time.sleep(0.05)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


# -- the steps ----------------------------------------------------------------------------


def bench_bare_route(windows: Windows, tmp: Path, seconds: float) -> dict[str, Any]:
    ids_file = tmp / "bare-ids.txt"
    ids_file.write_text("".join(f"{uuid_mod.uuid4()}\n" for _ in range(BARE_IDS)))
    with bare_route() as (url, pid):
        return windows.run(
            "bare_route", lambda: bench.run_wrk(url, ids_file, seconds, CONNECTIONS), pid
        )


def bench_commit_floor(
    windows: Windows, url: str, ids_file: Path, seconds: float
) -> dict[str, Any]:
    """The heartbeat window's closed loop on bare_commit.py: group commit and nothing else."""
    with bare_route([str(BARE_COMMIT), "--url", url]) as (base, pid):
        return windows.run(
            "heartbeat_floor", lambda: bench.run_wrk(base, ids_file, seconds, CONNECTIONS), pid
        )


def bench_register_floor(windows: Windows, records: Records, seconds: float) -> dict[str, Any]:
    """The new registrations' window on bare_commit.py: their rows and events in bulk, no more.

    Under a binary of their own, deleted after: the fleet stays --services
    strong, and no later sweep reads them.
    """
    try:
        with bare_route([str(BARE_COMMIT), "--url", records.url]) as (base, pid):

            def measure() -> dict[str, Any]:
                return run_register(base, seconds, binary=FLOOR_BINARY)

            return windows.run("register_floor", measure, pid)
    finally:
        records.delete_binary(FLOOR_BINARY)


def bench_registrations(
    windows: Windows, proc: FleetDaemon, records: Records, tmp: Path, seconds: float
) -> dict[str, Any]:
    pid, result = proc_pid(proc), {}

    def window(name: str, **how: Any) -> None:
        def measure() -> dict[str, Any]:
            rows_before = records.count_settled()
            figures = run_register(proc.url, seconds, **how)
            return {**figures, "rows_added": records.count_settled() - rows_before}

        result[name] = windows.run(f"register_{name}", measure, pid)

    window("new")
    hosts_file = tmp / "hosts.txt"
    hosts_file.write_text("".join(f"{h}\n" for h in records.column(services.c.host)))
    window("restart", hosts_file=hosts_file)
    window("paced", rate=REGISTER_RATE)
    return result


def build_fleet(
    proc: FleetDaemon, records: Records, n: int, settle_cap: float, log: Callable[[str], None]
) -> tuple[dict[str, Any], list[str]]:
    """Top up to n in SQL, one heartbeat each through the daemon, the first sweep's events."""
    registered = records.count_settled()
    start = time.perf_counter()
    inserted = records.top_up(max(0, n - registered))
    insert_s = time.perf_counter() - start
    ids = records.column(services.c.uuid)
    fleet: dict[str, Any] = {
        "services": len(ids),
        "registered_http": registered,
        "inserted_sql": inserted,
        "insert_s": round(insert_s, 2),
    }
    log(f"  fleet: {registered} registered over HTTP, {inserted} inserted; one beat each")
    fleet["beat_each"] = timed_step(proc, records, lambda: bench.beat_each(proc.url, ids))
    fleet["beat_each"]["per_s"] = round(len(ids) / fleet["beat_each"]["s"])
    log(f"  fleet: beat each of {len(ids)} in {fleet['beat_each']['s']} s; waiting for the sweeper")
    fleet["settle"] = timed_step(proc, records, lambda: bench.settle(proc.url, BINARY, settle_cap))
    return fleet, ids


def timed_step(proc: FleetDaemon, records: Records, step: Callable[[], object]) -> dict[str, Any]:
    """A step that cannot run twice, so no window: timed, with the daemon's CPU meanwhile.

    Also the events the sweeper wrote meanwhile, and the step's TimeoutError
    (run.settle's, past --settle-cap) if it ran out of time.
    """
    load1, cpu, events = os.getloadavg()[0], process_cpu(proc_pid(proc)), records.last_event()
    start, error = time.perf_counter(), None
    try:
        step()
    except TimeoutError as exc:
        error = str(exc)
    took = time.perf_counter() - start
    return {
        "s": round(took, 2),
        "load1_before": round(load1, 2),
        "daemon_cores": round((process_cpu(proc_pid(proc)) - cpu) / took, 2),
        "events_written": records.last_event() - events,
        "error": error,
    }


def bench_heartbeats(
    windows: Windows, proc: FleetDaemon, ids_file: Path, seconds: float
) -> dict[str, Any]:
    pid = proc_pid(proc)
    closed = windows.run(
        "heartbeat", lambda: bench.run_wrk(proc.url, ids_file, seconds, CONNECTIONS), pid
    )
    paced = windows.run(
        "heartbeat_paced",
        lambda: bench.run_wrk(proc.url, ids_file, seconds, CONNECTIONS, rate=BEAT_RATE),
        pid,
    )
    return {"closed": closed, "paced": {**paced, "offered_per_s": BEAT_RATE}}


def timed_get(client: httpx.Client, path: str, **params: str) -> tuple[float, httpx.Response]:
    start = time.perf_counter()
    resp = client.get(path, params=params).raise_for_status()
    return time.perf_counter() - start, resp


def bench_reads(url: str) -> dict[str, Any]:
    """The whole fleet listed and scraped, READS times each (alternated): median wall times."""
    lists, scrapes, not_up = [], [], []
    with httpx.Client(base_url=url, timeout=300) as client:
        for _ in range(READS):
            lists.append(timed_get(client, "/v1/services", binary=BINARY))
            scrapes.append(timed_get(client, "/metrics"))
            not_up.append(timed_get(client, "/metrics", per_service="not_up"))
    listed = lists[-1][1].json()["services"]
    sweeper = re.findall(SWEEPER_METRICS, scrapes[-1][1].text, re.M)
    return {
        "list_ms": bench.ms(statistics.median(t for t, _ in lists)),
        "list_ms_each": [bench.ms(t) for t, _ in lists],
        "list_mb": round(len(lists[-1][1].content) / 1e6, 2),
        "listed": len(listed),
        "listed_up": sum(s["state"] == "up" for s in listed),
        "metrics_ms": bench.ms(statistics.median(t for t, _ in scrapes)),
        "metrics_ms_each": [bench.ms(t) for t, _ in scrapes],
        "metrics_mb": round(len(scrapes[-1][1].content) / 1e6, 2),
        # A scrape of the counts and only the services not up (?per_service=not_up).
        "metrics_not_up_ms": bench.ms(statistics.median(t for t, _ in not_up)),
        "metrics_not_up_mb": round(len(not_up[-1][1].content) / 1e6, 3),
        "sweeper": {name + labels: float(value) for name, labels, value in sweeper},
    }


def bench_list_while_beating(url: str, ids_file: Path, seconds: float) -> dict[str, Any]:
    """READS lists of the fleet while wrk beats it at BEAT_RATE / 2: median wall time.

    bench_reads() lists a quiet fleet back to back, so its second and third
    lists find every status unchanged and reuse its JSON (status_json.py).
    A fleet that beats every report_interval changes every row within it:
    here the lists are `seconds / 2` apart after `seconds` of beats, each
    finding what changed meanwhile to build again.
    """
    rate = BEAT_RATE // 2
    argv, env = bench.wrk_command(
        url, ids_file, 2 * seconds + READS * seconds + 60, CONNECTIONS, rate
    )
    wrk = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    lists: list[float] = []
    try:
        time.sleep(seconds)
        with httpx.Client(base_url=url, timeout=300) as client:
            for _ in range(READS):
                lists.append(timed_get(client, "/v1/services", binary=BINARY)[0])
                time.sleep(seconds / 2)
    finally:
        wrk.send_signal(signal.SIGINT)
        out, _ = wrk.communicate(timeout=60)
    return {
        "list_ms": bench.ms(statistics.median(lists)),
        "list_ms_each": [bench.ms(t) for t in lists],
        "offered_per_s": rate,
        "beats": bench.parse_wrk(out),
    }


@dataclass
class DaemonsFleet:
    """What bench.Raw reads a Workload for: the daemon's own fleet, opened by the harness."""

    sg: ServiceGroup
    target: bench.Target
    binary: str
    services: list[Service]


def bench_floor(target: bench.Target, url: str) -> dict[str, Any]:
    """get_all against its raw floor (bench.Raw) on the daemon's fleet: medians of READS.

    In the harness, on its own connections, while the daemon idles: what a
    whole-fleet read costs the API (the list and /metrics add their JSON or
    text and the transfer), and the cheapest hand-written read of the same
    rows and liveness (ZooKeeper: its multiRead floor).
    """
    sg = ServiceGroup.from_options(database__connection=url, **target.options(**TIMING))
    raw = None
    try:
        fleet = DaemonsFleet(sg, target, BINARY, [s.service for s in sg.get_all(binary=BINARY)])
        raw = bench.Raw(fleet)
        read = raw.read_multiread if target.name == "zookeeper" else raw.read
        get_all, floor = [], []
        for _ in range(READS):
            start = time.perf_counter()
            up = {s.service.uuid for s in sg.get_all(binary=BINARY) if s.state is State.UP}
            get_all.append(time.perf_counter() - start)
            start = time.perf_counter()
            raw_up = read()
            floor.append(time.perf_counter() - start)
        return {
            "get_all_ms": bench.ms(statistics.median(get_all)),
            "raw_ms": bench.ms(statistics.median(floor)),
            "x_raw": round(statistics.median(get_all) / statistics.median(floor), 2),
            "agree": up == raw_up,
        }
    finally:
        if raw is not None:
            raw.close()
        sg.close()


def idle_cpu(windows: Windows, pid: int, seconds: float) -> dict[str, Any]:
    def measure() -> dict[str, Any]:
        start, cpu = time.monotonic(), process_cpu(pid)
        time.sleep(seconds)
        cores = (process_cpu(pid) - cpu) / (time.monotonic() - start)
        return {"seconds": seconds, "cores": round(cores, 3)}

    return windows.run("idle_cpu", measure, pid)


class Victims:
    """DETECT_VICTIMS services beaten by this bench every second, until stop().

    The moment each one's last beat was answered is its death, what
    detection is measured from.
    """

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=30)
        self.ids: list[str] = []
        for i in range(DETECT_VICTIMS):
            body = {"host": f"victim-{i}.example.org", "binary": BINARY}
            answer = self.client.post("/v1/services", json=body).raise_for_status()
            self.ids.append(answer.json()["id"])
        self.last_beat: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.is_set():
            for uuid in self.ids:
                self.client.post(f"/v1/services/{uuid}/heartbeat").raise_for_status()
                self.last_beat[uuid] = time.monotonic()
            self._stop.wait(1.0)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return dict(self.last_beat)

    def states(self) -> dict[str, str]:
        return {uuid: self.client.get(f"/v1/services/{uuid}").json()["state"] for uuid in self.ids}

    def wait_events(self, state: str, since: int, deadline: float) -> dict[str, float]:
        """When each victim's `state` event was seen on the stream (long polls)."""
        seen: dict[str, float] = {}
        while len(seen) < len(self.ids) and time.monotonic() < deadline:
            params = {"since": since, "binary": BINARY, "wait": 1}
            page = self.client.get("/v1/events", params=params).raise_for_status().json()
            for event in page["events"]:
                if event["state"] == state and event["service_id"] in self.ids:
                    seen.setdefault(event["service_id"], time.monotonic())
            since = page["cursor"]
        return seen

    def close(self) -> None:
        self._stop.set()
        self.client.close()


def detect_rate(ids_file: Path, down_time: float) -> int:
    """Beats/s at which each wrk thread walks every id twice per down time.

    heartbeat.lua spaces the threads evenly over the ids, so an id is beaten
    every D / (2 x threads): a daemon that takes only half the offered rate
    still reaches every id twice per D.
    """
    n = len(ids_file.read_text().split())
    return -(-2 * n * bench.WRK_THREADS // max(1, int(down_time)))


def handover(proc: FleetDaemon, ids_file: Path, down_time: float) -> dict[str, Any]:
    """Step 8's pace through the running daemon for half a down time, just before step 8.

    So the new daemon finds a fleet that beat within its down time, as a
    daemon restarted in a running deployment does. Started on a fleet that
    last beat minutes ago, a daemon at 100,000 services on PostgreSQL first
    met a fleet all down and coming back at once: the sweeper's storm took
    its beats to 2,000/s of 6,667 offered, and 46,760 false downs followed.
    """
    rate = detect_rate(ids_file, down_time)
    return bench.run_wrk(proc.url, ids_file, down_time / 2 + 2, CONNECTIONS, rate=rate)


def bench_detection(
    target: bench.Target,
    records: Records,
    ids_file: Path,
    opts: Options,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Step 8: a fleet beating at its real pace while a few services die.

    A new daemon on the same fleet with service_down_time D, started right
    after handover(): wrk beats every id at detect_rate(), then DETECT_VICTIMS
    services this bench beats stop at once. Measured: when each reads down
    (GET /v1/services, every 50 ms) and when its down event comes, from its
    last answered beat; and every down event of the beating fleet meanwhile,
    each a false down. The targets: down within D + 1 s, the event within
    one sweep_interval after it.
    """
    down_time = opts.detect_down_time
    rate = detect_rate(ids_file, down_time)
    timing = {"service_down_time": down_time, "report_interval": down_time / 6}
    result: dict[str, Any] = {
        "service_down_time": down_time,
        "sweep_interval": SWEEP_INTERVAL,
        "fleet_offered_per_s": rate,
    }
    with daemon(target, records.url, opts.daemon_pythonpath, timing) as proc:
        argv, env = bench.wrk_command(proc.url, ids_file, 4 * down_time + 600, CONNECTIONS, rate)
        wrk = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
        before_victims = records.last_event()
        victims = Victims(proc.url)
        try:
            # handover() beat the fleet at this pace just before: none should read down.
            settled = time.monotonic()
            with httpx.Client(base_url=proc.url, timeout=120) as client:
                while time.monotonic() - settled < opts.settle_cap:
                    listed = client.get("/v1/services", params={"binary": BINARY, "state": "down"})
                    down = len(listed.raise_for_status().json()["services"])
                    result.setdefault("fleet_down_at_start", down)
                    if not down:
                        break
                    # Each poll is a read of the whole fleet (~1 s of the daemon's
                    # CPU at 100,000): polled every second, it took the beats' core.
                    time.sleep(SETTLE_POLL)
            result["fleet_settle_s"] = round(time.monotonic() - settled, 1)
            up = victims.wait_events("up", before_victims, time.monotonic() + 120)
            if len(up) < DETECT_VICTIMS:
                raise RuntimeError(f"{len(up)} of {DETECT_VICTIMS} victims came up")
            since = records.last_event()
            log(f"  detection: fleet up after {result['fleet_settle_s']} s; stopping the victims")
            died = victims.stop()
            down_at: dict[str, float] = {}
            deadline = time.monotonic() + down_time + 30
            events: dict[str, float] = {}
            watcher = threading.Thread(
                target=lambda: events.update(victims.wait_events("down", since, deadline))
            )
            watcher.start()
            while len(down_at) < DETECT_VICTIMS and time.monotonic() < deadline:
                for uuid, state in victims.states().items():
                    if state == "down":
                        down_at.setdefault(uuid, time.monotonic())
                time.sleep(0.05)
            watcher.join()
            result["false_downs"] = records.downs_since(since, victims.ids)
        finally:
            victims.close()
            wrk.send_signal(signal.SIGINT)
            out, _ = wrk.communicate(timeout=60)
    result["fleet_beats"] = bench.parse_wrk(out)
    runs = [
        {
            "down_s": round(down_at[u] - died[u], 3) if u in down_at else None,
            "event_s": round(events[u] - died[u], 3) if u in events else None,
        }
        for u in victims.ids
    ]
    downs = [r["down_s"] for r in runs]
    after = [r["event_s"] - r["down_s"] for r in runs if r["event_s"] and r["down_s"]]
    result.update(
        victims=runs,
        down_worst_s=None if None in downs else max(downs),
        event_after_down_worst_s=round(max(after), 3) if len(after) == len(runs) else None,
    )
    result["down_met"] = result["down_worst_s"] is not None and result["down_worst_s"] <= (
        down_time + 1
    )
    result["event_met"] = (
        result["event_after_down_worst_s"] is not None
        and result["event_after_down_worst_s"] <= SWEEP_INTERVAL
    )
    return result


def log_problems(text: str, keep: int = 20) -> dict[str, Any]:
    """The daemon log's warnings, errors and tracebacks: how many, and the first few."""
    lines = [line for line in text.splitlines() if re.search(r"WARNING|ERROR|Traceback", line)]
    return {"count": len(lines), "first": lines[:keep]}


def proc_pid(proc: Daemon) -> int:
    assert proc.proc is not None
    return proc.proc.pid


def bench_target(target: bench.Target, opts: Options, log: Callable[[str], None]) -> dict[str, Any]:
    """Every step on one target: the bare route, then one daemon on a fresh database."""
    windows = Windows(opts.max_others, opts.retries, opts.quiet_cap, log)
    target.check()
    result: dict[str, Any] = {}
    log(f"{target.name}: bare route")
    result["bare_route"] = bench_bare_route(windows, target.env.tmp, opts.seconds)
    try:
        with (
            target.env.database(target.dialect) as url,
            contextlib.closing(Records(url)) as records,
        ):
            windows.events = records.last_event
            with daemon(target, url, opts.daemon_pythonpath, workers=opts.workers) as proc:
                result["daemon_imports"] = proc.imported()
                log(f"{target.name}: daemon from {result['daemon_imports']}")
                result.update(bench_daemon(target, proc, records, windows, opts, log))
                if opts.detect_down_time > 0:
                    log(f"{target.name}: the fleet at step 8's pace, then a new daemon")
                    result["handover"] = handover(proc, fleet_ids(target), opts.detect_down_time)
            result["daemon_log"] = log_problems(proc.log())
            if opts.detect_down_time > 0:
                log(f"{target.name}: detection, service_down_time {opts.detect_down_time:g} s")
                detection = bench_detection(target, records, fleet_ids(target), opts, log)
                result["detection"] = detection
                log(f"  {detection_summary(detection)}")
    finally:
        target.cleanup()
    return result


def fleet_ids(target: bench.Target) -> Path:
    """The fleet's uuids, one per line, for heartbeat.lua."""
    return target.env.tmp / f"fleet-ids-{target.tag}.txt"


def detection_summary(d: dict[str, Any]) -> str:
    beats = d["fleet_beats"]
    return (
        f"down worst {d['down_worst_s']} s (met: {d['down_met']}), event worst "
        f"{d['event_after_down_worst_s']} s after (met: {d['event_met']}); "
        f"false downs {d['false_downs']}; fleet {beats['per_s']:.0f} beats/s "
        f"of {d['fleet_offered_per_s']}, p99 {beats['p99_ms']} ms, non-2xx {beats['non_2xx']}"
    )


def bench_daemon(
    target: bench.Target,
    proc: FleetDaemon,
    records: Records,
    windows: Windows,
    opts: Options,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Steps 2 to 7 on one running daemon, in order."""
    tmp, pid = target.env.tmp, proc_pid(proc)
    log(f"{target.name}: registrations")
    result = {"register": bench_registrations(windows, proc, records, tmp, opts.seconds)}
    if target.dialect == "postgresql" and target.name.startswith("db-"):
        result["register"]["floor"] = bench_register_floor(windows, records, opts.seconds)
    fleet, ids = build_fleet(proc, records, opts.services, opts.settle_cap, log)
    result["fleet"] = fleet
    ids_file = fleet_ids(target)
    ids_file.write_text("".join(f"{i}\n" for i in ids))
    log(f"{target.name}: heartbeats over {len(ids)}")
    result["heartbeat"] = bench_heartbeats(windows, proc, ids_file, opts.seconds)
    if target.dialect == "postgresql" and target.name.startswith("db-"):
        result["heartbeat"]["floor"] = bench_commit_floor(
            windows, records.url, ids_file, opts.seconds
        )
    log(f"{target.name}: reads")
    result["reads"] = bench_reads(proc.url)
    result["reads"]["beating"] = bench_list_while_beating(proc.url, ids_file, opts.seconds)
    result["floor"] = bench_floor(target, records.url)
    log(f"  get_all {result['floor']['get_all_ms']} ms, raw floor {result['floor']['raw_ms']} ms")
    result["rss_mb"] = tree_rss_mb(pid)
    log(f"{target.name}: idle CPU over {opts.idle_seconds:g} s")
    result["idle_cpu"] = idle_cpu(windows, pid, opts.idle_seconds)
    return result


# -- the report ------------------------------------------------------------------------------


def _errors(window: dict[str, Any]) -> str:
    sock = window["socket_errors"]
    return f"{window['non_2xx']}" + (f" ({sock})" if sock else "")


def list_while_beating(beating: dict[str, Any]) -> str:
    return f"{beating['list_ms']}; {beating['beats']['per_s']:.0f} ({beating['offered_per_s']})"


ROWS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("bare route req/s", lambda r: f"{r['bare_route']['per_s']:.0f}"),
    ("bare route p99 ms", lambda r: r["bare_route"]["p99_ms"]),
    ("register new /s (201s)", lambda r: f"{r['register']['new']['per_s']:.0f}"),
    ("register new p99 ms", lambda r: r["register"]["new"]["p99_ms"]),
    ("register restart /s (200s)", lambda r: f"{r['register']['restart']['per_s']:.0f}"),
    ("register restart p99 ms", lambda r: r["register"]["restart"]["p99_ms"]),
    (
        "bare group commit floor registrations new/s (p99 ms)",
        lambda r: (
            f"{r['register']['floor']['per_s']:.0f} ({r['register']['floor']['p99_ms']})"
            if "floor" in r["register"]
            else "-"
        ),
    ),
    ("register paced /s (1,000 offered)", lambda r: f"{r['register']['paced']['per_s']:.0f}"),
    ("register paced p99 ms", lambda r: r["register"]["paced"]["p99_ms"]),
    (
        "register statuses new/restart/paced",
        lambda r: " / ".join(
            ",".join(f"{c}:{n}" for c, n in sorted(r["register"][k]["status"].items()))
            for k in ("new", "restart", "paced")
        ),
    ),
    ("services", lambda r: r["fleet"]["services"]),
    ("beat each, s", lambda r: r["fleet"]["beat_each"]["s"]),
    (
        "first sweep settled, s",
        lambda r: (
            f"{r['fleet']['settle']['s']}" + (" (cap)" if r["fleet"]["settle"]["error"] else "")
        ),
    ),
    ("heartbeats/s closed", lambda r: f"{r['heartbeat']['closed']['per_s']:.0f}"),
    ("heartbeat p99 ms closed", lambda r: r["heartbeat"]["closed"]["p99_ms"]),
    ("heartbeats/s paced (10,000 offered)", lambda r: f"{r['heartbeat']['paced']['per_s']:.0f}"),
    ("heartbeat p99 ms paced", lambda r: r["heartbeat"]["paced"]["p99_ms"]),
    (
        "bare group commit floor beats/s (p99 ms)",
        lambda r: (
            f"{r['heartbeat']['floor']['per_s']:.0f} ({r['heartbeat']['floor']['p99_ms']})"
            if "floor" in r["heartbeat"]
            else "-"
        ),
    ),
    (
        "daemon CPU us/beat closed",
        lambda r: r["heartbeat"]["closed"]["window"].get("daemon_cpu_us_per_request"),
    ),
    (
        "non-2xx (socket errors) reg new/restart/paced, beat closed/paced",
        lambda r: " / ".join(
            _errors(w)
            for w in (
                r["register"]["new"],
                r["register"]["restart"],
                r["register"]["paced"],
                r["heartbeat"]["closed"],
                r["heartbeat"]["paced"],
            )
        ),
    ),
    ("GET list ms (median of 3)", lambda r: r["reads"]["list_ms"]),
    (
        "GET list ms while beating (median of 3); beats/s (offered)",
        lambda r: list_while_beating(r["reads"]["beating"]),
    ),
    (
        "GET list MB / listed / up",
        lambda r: f"{r['reads']['list_mb']} / {r['reads']['listed']} / {r['reads']['listed_up']}",
    ),
    ("GET /metrics ms (median of 3)", lambda r: r["reads"]["metrics_ms"]),
    ("GET /metrics MB", lambda r: r["reads"]["metrics_mb"]),
    (
        "GET /metrics?per_service=not_up ms (MB)",
        lambda r: f"{r['reads']['metrics_not_up_ms']} ({r['reads']['metrics_not_up_mb']})",
    ),
    (
        "get_all ms / raw floor ms (x raw), harness",
        lambda r: f"{r['floor']['get_all_ms']} / {r['floor']['raw_ms']} ({r['floor']['x_raw']})",
    ),
    ("RSS MB after reads", lambda r: r["rss_mb"]),
    ("idle CPU, cores", lambda r: r["idle_cpu"]["cores"]),
    (
        "detection: down / event after down, worst s",
        lambda r: _detection(r, lambda d: f"{d['down_worst_s']} / {d['event_after_down_worst_s']}"),
    ),
    (
        "detection: false downs; fleet beats/s (offered)",
        lambda r: _detection(
            r,
            lambda d: (
                f"{d['false_downs']}; {d['fleet_beats']['per_s']:.0f} ({d['fleet_offered_per_s']})"
            ),
        ),
    ),
    (
        "max others' cores in a window",
        lambda r: max(w["window"]["others_cores"] for w in windows_of(r)),
    ),
    (
        "max load1 before a window",
        lambda r: max(w["window"]["load1_before"] for w in windows_of(r)),
    ),
]


def _detection(result: dict[str, Any], show: Callable[[dict[str, Any]], str]) -> str:
    detection = result.get("detection")
    return "-" if detection is None else show(detection)


def windows_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    reg, beat = result["register"], result["heartbeat"]
    return [result["bare_route"], *reg.values(), *beat.values(), result["idle_cpu"]]


def table(report: dict[str, Any]) -> str:
    """A markdown table: a figure per row, a target per column."""
    m, targets = report["machine"], report["targets"]
    lines = [
        f"machine: {m['cores']} cores, {m['memory_mb']} MB, load {m['loadavg']} -> "
        f"{report['loadavg_end']}, python {m['python']}",
        "",
        "| figure | " + " | ".join(targets) + " |",
        "|---|" + "---|" * len(targets),
    ]
    for label, cell in ROWS:
        cells = []
        for result in targets.values():
            try:
                cells.append(str(cell(result)))
            except (KeyError, TypeError, ValueError):
                cells.append(str(result.get("error", "-")) if label == ROWS[0][0] else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    imports = {name: r.get("daemon_imports", "-") for name, r in targets.items()}
    lines += ["", "daemon imported: " + ", ".join(f"{n}: {p}" for n, p in imports.items())]
    return "\n".join(lines)


# -- driving it ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str], Options]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--driver",
        action="append",
        help=f"target(s), comma-separated or repeated: {', '.join(TARGETS)} "
        f"(default {','.join(DEFAULT_TARGETS)})",
    )
    parser.add_argument("--services", type=int, help="the fleet's size N (default 100,000)")
    parser.add_argument("--seconds", type=float, help="each wrk window (default 10)")
    parser.add_argument("--quick", action="store_true", help="3,000 services, 2 s windows")
    parser.add_argument("--json", type=Path, help="write the full results here")
    parser.add_argument(
        "--daemon-pythonpath", type=Path, help="run the daemon from this source tree"
    )
    parser.add_argument("--settle-cap", type=float, help="the longest wait for the first sweep")
    parser.add_argument("--idle-seconds", type=float, help="the idle CPU window (default 20)")
    parser.add_argument(
        "--max-others", type=float, default=0.5, help="others' cores above which a window reruns"
    )
    parser.add_argument("--retries", type=int, help="reruns of a busy window (default 2)")
    parser.add_argument(
        "--quiet-cap",
        type=float,
        help="before each window, wait at most this long for others to go quiet (default 120 s)",
    )
    parser.add_argument(
        "--detect-down-time",
        type=float,
        help=f"step 8's service_down_time (default {DETECT_DOWN_TIME:g} s; 0 skips step 8)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="the daemon's [api] workers (default 1)"
    )
    parser.add_argument("--bare-route", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [n.strip() for spec in args.driver or DEFAULT_TARGETS for n in spec.split(",")]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown driver(s): {', '.join(unknown)}")
    if args.daemon_pythonpath and not (args.daemon_pythonpath / "servicegroup").is_dir():
        parser.error(f"--daemon-pythonpath: no servicegroup package in {args.daemon_pythonpath}")
    quick = args.quick
    opts = Options(
        services=args.services or (3_000 if quick else 100_000),
        seconds=args.seconds or (2.0 if quick else 10.0),
        settle_cap=args.settle_cap or (60.0 if quick else 300.0),
        idle_seconds=args.idle_seconds or (2.0 if quick else 20.0),
        max_others=args.max_others,
        retries=args.retries if args.retries is not None else (0 if quick else 2),
        quiet_cap=args.quiet_cap if args.quiet_cap is not None else (0.0 if quick else 120.0),
        daemon_pythonpath=args.daemon_pythonpath,
        detect_down_time=args.detect_down_time
        if args.detect_down_time is not None
        else (5.0 if quick else DETECT_DOWN_TIME),
        workers=args.workers,
    )
    if opts.services < 1 or opts.seconds <= 0 or opts.idle_seconds <= 0 or opts.workers < 1:
        parser.error("--services and --workers must be >= 1, --seconds and --idle-seconds > 0")
    return args, names, opts


def main(argv: list[str] | None = None) -> int:
    args, names, opts = parse_args(argv)
    if args.bare_route:
        return serve_bare_route(args.bare_route)
    if bench.WRK is None:
        print("fleet: wrk is not installed (Debian package wrk)", file=sys.stderr)
        return 1

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    report: dict[str, Any] = {
        "command": " ".join(["python", "bench/fleet.py", *(argv or sys.argv[1:])]),
        "machine": bench.machine(),
        "options": {**opts.__dict__, "daemon_pythonpath": str(opts.daemon_pythonpath or "")},
        "timing": TIMING,
        "targets": {},
    }
    report["targets"], failed = bench.measure_targets(
        names, lambda target: bench_target(target, opts, log), log
    )
    bench.finish(report, table, args.json)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
