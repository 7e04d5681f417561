"""servicegroup benchmarks, side by side with the nova-style pattern and the raw backend.

    python bench/run.py --driver memcached --services 10000 --json out.json
    python bench/run.py --all                # every driver (db on 3 dialects, zk, mc, tooz)
    python bench/run.py --quick --driver db-sqlite   # seconds; what the test suite runs

Run from the repository root. Backends are started with the same throwaway
server code as the tests (tests/servers.py); SQL databases are scratch
databases on the machine's PostgreSQL / MariaDB, dropped afterwards; Redis
keys live in a unique tooz namespace, deleted afterwards.

Method: the machine is shared and noisy, so every comparison runs in the same
process, in the same run, ALTERNATING the variants (A, B, C, A, B, C ...) for
several repetitions; figures are medians and ratios of medians. See
doc/benchmarks.md for what each scenario measures and why.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid as uuid_mod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from servicegroup import ServiceGroup  # noqa: E402
from servicegroup.db import migration  # noqa: E402
from servicegroup.db.engine import make_engine  # noqa: E402
from servicegroup.db.models import server_now, services  # noqa: E402
from servicegroup.service import Service, State  # noqa: E402
from tests.functional.daemon import Daemon, free_port  # noqa: E402
from tests.servers import (  # noqa: E402
    MYSQL_ADMIN,
    POSTGRESQL_ADMIN,
    REDIS_URL,
    MemcachedServer,
    ServerUnavailable,
    ZooKeeperServer,
    scratch_database,
)

DRIVERS = (
    "db-sqlite",
    "db-postgresql",
    "db-mysql",
    "zookeeper",
    "memcached",
    "tooz-redis",
    "tooz-zookeeper",
)
# Every DOWN_EVERY-th service never beats: "who is up" must have a non-trivial answer.
DOWN_EVERY = 10
# Long enough that nothing expires while a scenario runs (detection sets its own).
BENCH_DOWN_TIME = 3600.0
NOVA_SAMPLE = 500
# The paced daemon run's fixed offered load (heartbeat.lua), just above the
# target's 1,000 beats/s sustained, over the same 50 connections.
PACED_RATE = 1050
WRK_THREADS = 2
# Paced daemon windows per driver; on these dialects each is followed by the
# same paced writes sent to the database without the daemon (paced_sql.py).
# SQLite has no server: its floor is the daemon's own file.
PACED_ROUNDS = 2
PACED_RAW_DIALECTS = ("postgresql", "mysql")
PACED_SQL = Path(__file__).with_name("paced_sql.py")
# These targets' paced windows alternate with the same window on a bare
# route that only calls each member's tooz heartbeat() (bare_tooz.py): the
# floor of a daemon holding one ZooKeeper session per member.
PACED_BARE_TARGETS = ("tooz-zookeeper",)
BARE_TOOZ = Path(__file__).with_name("bare_tooz.py")
# tooz keeps one coordinator per beating service: a redis connection each, or a
# ZooKeeper session each (with kazoo's threads). So the tooz targets beat at
# most this many services; BenchZooKeeper lifts ZooKeeper's default limit of
# 60 connections per client address, which 100 sessions would exceed.
TOOZ_BEATERS = {"tooz-redis": 500, "tooz-zookeeper": 100}
WRK = shutil.which("wrk")
LUA = Path(__file__).with_name("heartbeat.lua")
CHILD = Path(__file__).with_name("child.py")


class Unavailable(RuntimeError):
    """A backend this target needs is not there: the target is skipped, and says why."""


# -- measurement helpers -------------------------------------------------------


def alternate(
    variants: dict[str, Callable[[], Any] | tuple[Callable[[], Any], Callable[[], Any]]],
    reps: int,
) -> dict[str, list[float]]:
    """Time each variant once per repetition, in turn: A, B, C, A, B, C ...

    Interleaving spreads the machine's noise over every variant alike, so the
    ratio of medians stays meaningful when the absolute figures wander. A
    variant given as (prepare, run) has prepare() called untimed before each run.
    """
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, variant in variants.items():
            if isinstance(variant, tuple):
                prepare, fn = variant
                prepare()
            else:
                fn = variant
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else round(a / b, 2)


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text()
    total_kb = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))
    model = ""
    with contextlib.suppress(OSError):
        found = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
        model = found.group(1) if found else ""
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_mb": total_kb // 1024,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    }


# -- environment: servers and scratch databases --------------------------------


class BenchZooKeeper(ZooKeeperServer):
    """The tests' ZooKeeper, without the per-address connection limit (tooz: a session each)."""

    def command(self) -> list[str]:
        cmd = super().command()
        with open(self.workdir / "zoo.cfg", "a") as cfg:
            cfg.write("maxClientCnxns=0\n")
        return cmd


class Env:
    """Servers started on demand and shared by every target; everything cleaned at exit."""

    def __init__(self) -> None:
        self.stack = contextlib.ExitStack()
        self.tmp = Path(tempfile.mkdtemp(prefix="sg-bench-"))
        self.stack.callback(shutil.rmtree, self.tmp, True)
        self._zk: ZooKeeperServer | None = None
        self._mc: MemcachedServer | None = None

    def close(self) -> None:
        self.stack.close()

    @property
    def zk(self) -> ZooKeeperServer:
        if self._zk is None:
            self._zk = self._start(BenchZooKeeper())
        return self._zk

    @property
    def mc(self) -> MemcachedServer:
        if self._mc is None:
            self._mc = self._start(MemcachedServer())
        return self._mc

    def _start(self, server: Any) -> Any:
        try:
            server.start()
        except ServerUnavailable as exc:
            server.cleanup()
            raise Unavailable(f"{server.name}: {exc}") from exc
        self.stack.callback(server.cleanup)
        return server

    @contextlib.contextmanager
    def database(self, dialect: str) -> Iterator[str]:
        """A fresh migrated database: a file for SQLite, a scratch database otherwise."""
        if dialect == "sqlite":
            path = self.tmp / f"sg-{uuid_mod.uuid4().hex[:8]}.sqlite"
            url = f"sqlite:///{path}"
            engine = make_engine(url)
            migration.upgrade(engine)
            engine.dispose()
            try:
                yield url
            finally:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
            return
        admin_url = POSTGRESQL_ADMIN if dialect == "postgresql" else MYSQL_ADMIN
        with contextlib.ExitStack() as stack:
            try:
                url = stack.enter_context(scratch_database(admin_url, "sg_bench"))
            except ServerUnavailable as exc:
                raise Unavailable(f"{dialect}: {exc}") from exc
            yield url


@dataclass
class Target:
    """One driver on one backend: how to configure it, fill it, and read/write it raw."""

    name: str
    env: Env
    tag: str = field(default_factory=lambda: uuid_mod.uuid4().hex[:8])

    @property
    def driver(self) -> str:
        return self.name.split("-")[0]

    @property
    def dialect(self) -> str:
        return self.name.split("-", 1)[1] if self.driver == "db" else "sqlite"

    def options(self, **timing: float) -> dict[str, Any]:
        """ServiceGroup.from_options keywords (also written to the daemon's config)."""
        opts: dict[str, Any] = {"driver": self.driver, **timing}
        if self.name == "zookeeper":
            opts["zookeeper__hosts"] = [self.env.zk.address]
            opts["zookeeper__root"] = f"/sgbench-{self.tag}"
        elif self.name == "memcached":
            opts["memcached__servers"] = [self.env.mc.address]
            opts["memcached__key_prefix"] = f"sgbench-{self.tag}-"
        elif self.name == "tooz-redis":
            opts["tooz__backend_url"] = f"{REDIS_URL}?namespace=sgbench-{self.tag}"
        elif self.name == "tooz-zookeeper":
            opts["tooz__backend_url"] = (
                f"zookeeper://{self.env.zk.address}?namespace=sgbench-{self.tag}"
            )
        return opts

    def check(self) -> None:
        if self.name == "tooz-redis":
            import redis

            try:
                redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
            except redis.RedisError as exc:
                raise Unavailable(f"Redis: {exc}") from exc
        self.options()  # starts the servers it needs

    def cleanup(self) -> None:
        if self.name == "tooz-redis":
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(f"sgbench-{self.tag}*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])
            client.close()


# -- a workload: N registered services, 90% of them beating ----------------------


class Workload:
    """N services of one binary in a fresh database, every DOWN_EVERY-th never beating."""

    def __init__(self, target: Target, n: int, url: str) -> None:
        self.target, self.n, self.url = target, n, url
        self.binary = f"bench-{n}"
        self.sg = ServiceGroup.from_options(
            database__connection=url,
            report_interval=BENCH_DOWN_TIME / 10,
            service_down_time=BENCH_DOWN_TIME,
            **target.options(),
        )
        self._closers: list[Callable[[], None]] = []
        self.services = self._register()
        self.beating = [s for i, s in enumerate(self.services) if i % DOWN_EVERY]
        self._make_up(self.beating)

    def close(self) -> None:
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                closer()
        self.sg.close()

    def _register(self) -> list[Service]:
        """Rows written in bulk: registration is not what is measured, and 10,000 is slow."""
        now = datetime.now(UTC).replace(tzinfo=None)
        rows = [
            {
                "uuid": str(uuid_mod.uuid4()),
                "host": f"host-{i:05d}.example.org",
                "binary": self.binary,
                "topic": "compute",
                "availability_zone": f"az{i % 3}",
                "version": 60 + i % 3,
                "created_at": now,
                "observed_state": "down",
                "observed_at": now,
            }
            for i in range(self.n)
        ]
        with self.sg.engine.begin() as conn:
            for start in range(0, len(rows), 1000):
                conn.execute(services.insert(), rows[start : start + 1000])
            if conn.dialect.name == "postgresql":
                # This machine's PostgreSQL runs without autovacuum, whose
                # analyze a deployment's table gets after growing by N rows.
                # Without statistics each sweep slice (uuid > x ORDER BY uuid
                # LIMIT n) scanned the whole table instead of the uuid index.
                conn.execute(sa.text("ANALYZE services"))
        return [s.service for s in self.sg.get_all(binary=self.binary)]

    def _make_up(self, beating: list[Service]) -> None:
        """Write every beating service's liveness the cheapest way the backend allows."""
        driver = self.sg.driver
        kind = self.target.name
        if kind.startswith("db-"):
            uuids = [s.uuid for s in beating]
            with self.sg.engine.begin() as conn:
                for start in range(0, len(uuids), 500):
                    conn.execute(
                        sa.update(services)
                        .where(services.c.uuid.in_(uuids[start : start + 500]))
                        .values(last_seen_up=server_now(), report_count=1)
                    )
        elif kind == "memcached":
            for svc in beating:
                driver.beat(svc)
        elif kind == "zookeeper":
            # Pipelined creates on the driver's own session: the nodes its
            # beat() would make, without 10,000 sequential round trips.
            client = driver._client
            nodes = [driver._node(s) for s in beating]
            client.ensure_path(nodes[0].path.rsplit("/", 1)[0])
            pending = [client.create_async(n.path, n.data, ephemeral=True) for n in nodes]
            for result in pending:
                result.get(timeout=30)
            driver.beat(beating[0])  # samples ZooKeeper's clock
        else:  # tooz: one populating coordinator wearing each member's id in turn
            from tooz import coordination

            from servicegroup.drivers.tooz import group_id, member_id

            coord = coordination.get_coordinator(driver.url, b"sgbench-populator")
            coord.start(start_heart=False)
            self._closers.append(coord.stop)
            group = group_id(self.binary)
            with contextlib.suppress(coordination.GroupAlreadyExist):
                coord.create_group(group).get()
            pending = []
            for svc in beating:
                coord._member_id = member_id(svc.host, svc.binary)
                caps = {"uuid": svc.uuid, "version": svc.version}
                pending.append(coord.join_group(group, caps))
                if kind == "tooz-redis":
                    coord.heartbeat()
            for result in pending:
                result.get()
            # Redis prunes members whose beat key is gone; the key names follow
            # the member id, which is how the populator made them.

    def expected_up(self) -> set[str]:
        return {s.uuid for s in self.beating}


# -- raw floors: the cheapest hand-written read/write with the same client ------


class RawSQL:
    """One SELECT of the same rows (and the server's clock), on a held DBAPI connection."""

    def __init__(self, engine: sa.Engine, binary: str) -> None:
        stmt = sa.select(services, server_now().label("db_now")).where(
            (services.c.binary == sa.bindparam("b")) & (services.c.deleted == 0)
        )
        compiled = stmt.compile(dialect=engine.dialect)
        params = compiled.construct_params({"b": binary})
        self.sql = str(compiled)
        if engine.dialect.positional:
            self.params: Any = tuple(params[k] for k in compiled.positiontup)
        else:
            self.params = params
        self.conn = engine.raw_connection()
        self.sqlite = engine.dialect.name == "sqlite"
        cols = [c.name for c in services.columns]
        self.i_uuid, self.i_seen = cols.index("uuid"), cols.index("last_seen_up")
        self.i_host = cols.index("host")

    def rows(self) -> list[Any]:
        cur = self.conn.cursor()
        cur.execute(self.sql, self.params)
        rows = cur.fetchall()
        cur.close()
        self.conn.commit()  # end the read transaction, as a pooled connection would
        return rows

    def up_by_sql_clock(self, down_time: float) -> set[str]:
        rows = self.rows()
        up = set()
        parse = datetime.fromisoformat
        for row in rows:
            seen, now = row[self.i_seen], row[-1]
            if seen is None:
                continue
            if self.sqlite:
                seen, now = parse(seen), parse(now)
            if (now - seen).total_seconds() <= down_time:
                up.add(row[self.i_uuid])
        return up

    def close(self) -> None:
        self.conn.close()


def raw_beat_sql(engine: sa.Engine) -> tuple[str, Callable[[str], Any]]:
    """The heartbeat's UPDATE by hand, for the dialect: its SQL and a uuid -> params function."""
    stmt = (
        sa.update(services)
        .where((services.c.uuid == sa.bindparam("u")) & (services.c.deleted == 0))
        .values(report_count=services.c.report_count + 1, last_seen_up=server_now())
    )
    compiled = stmt.compile(dialect=engine.dialect)

    def params_for(uuid: str) -> Any:
        params = compiled.construct_params({"u": uuid})
        if engine.dialect.positional:
            return tuple(params[k] for k in compiled.positiontup)
        return params

    return str(compiled), params_for


class Raw:
    """The raw floor of one target: read = SELECT + backend read; write = one backend write."""

    def __init__(self, work: Workload) -> None:
        self.work = work
        self.sql = RawSQL(work.sg.engine, work.binary)
        self.down = work.sg.down_time
        self.kind = work.target.name
        self._closers: list[Callable[[], None]] = [self.sql.close]
        driver = work.sg.driver
        if self.kind == "memcached":
            # The driver's own connection (its pymemcache Client for this
            # thread), as for the raw write (writer()): a second connection
            # would measure where memcached placed it.
            self.mc = driver.servers[0].client()
        elif self.kind == "zookeeper":
            from kazoo.client import KazooClient

            self.zk = KazooClient(hosts=work.target.env.zk.address)
            self.zk.start(10)
            self._closers += [self.zk.stop, self.zk.close]
            self.zk_parent = driver._node(work.services[0]).path.rsplit("/", 1)[0]
            self.zk_paths = {s.uuid: driver._node(s).path for s in work.services}
            self.zk_data = {s.uuid: driver._node(s).data for s in work.services}
        elif self.kind.startswith("tooz-"):
            from tooz import coordination

            from servicegroup.drivers.tooz import group_id, member_id

            self.tooz = coordination.get_coordinator(driver.reader_url, b"sgbench-raw-reader")
            self.tooz.start(start_heart=False)
            self._closers.append(self.tooz.stop)
            self.group = group_id(work.binary)
            self.member_of = member_id

    def close(self) -> None:
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                closer()

    # reads -------------------------------------------------------------------

    def backend_read(self, rows: list[Any]) -> set[str]:
        """Up uuids from the backend alone, for the uuids in `rows`."""
        i_uuid, i_host = self.sql.i_uuid, self.sql.i_host
        if self.kind == "memcached":
            uuids = [r[i_uuid] for r in rows]
            values = self.mc.get_many(uuids)
            now_us = time.time() * 1e6
            limit = self.down * 1e6
            return {u for u, v in values.items() if now_us - int(v.split(b"|", 1)[0]) <= limit}
        if self.kind == "zookeeper":
            now_ms = time.time() * 1000
            children = self.zk.get_children(self.zk_parent)
            pending = [self.zk.get_async(f"{self.zk_parent}/{c}") for c in children]
            up = set()
            for result in pending:
                data, stat = result.get(timeout=10)
                if now_ms - stat.mtime <= self.down * 1000:
                    up.add(json.loads(data)["uuid"])
            return up
        if self.kind.startswith("tooz-"):
            members = self.tooz.get_members(self.group).get(timeout=10)
            binary = self.work.binary
            return {r[i_uuid] for r in rows if self.member_of(r[i_host], binary) in members}
        raise AssertionError(self.kind)

    def zk_multiread(self) -> set[str]:
        """kazoo get_children, then multiReads (ZooKeeper 3.6+) of the children in chunks.

        kazoo has no multiRead call: the request object is the driver's
        (serialization only), sent through kazoo's own queue.
        """
        from servicegroup.drivers.zookeeper import MULTI_READ_BUDGET, MultiRead, chunks

        now_ms = time.time() * 1000
        parent = self.zk_parent
        children = self.zk.get_children(parent)
        pending = []
        for chunk in chunks([f"{parent}/{c}" for c in children], MULTI_READ_BUDGET):
            result = self.zk.handler.async_result()
            self.zk._call(MultiRead(chunk), result)
            pending.append(result)
        up = set()
        limit = self.down * 1000
        for result in pending:
            for data, mtime, _mzxid in result.get(timeout=10):
                if now_ms - mtime <= limit:
                    up.add(json.loads(data)["uuid"])
        return up

    def read_multiread(self) -> set[str]:
        """The zookeeper floor with multiRead: the same SELECT, then zk_multiread()."""
        self.sql.rows()
        return self.zk_multiread()

    def read(self) -> set[str]:
        """The floor of get_all: the same rows from SQL, plus the backend's word on them."""
        if self.kind.startswith("db-"):
            return self.sql.up_by_sql_clock(self.down)
        return self.backend_read(self.sql.rows())

    # writes ------------------------------------------------------------------

    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        """db targets: hold the pool's next connection for a block of raw writes.

        The pool is LIFO, so the heartbeat's next block checks out this very
        connection again: both write to the same server backend, and the
        ratio is the code's (see writer()). SQLite's heartbeat has its own
        connections (db/engine.py _Spares); there is no server to differ.
        """
        if not self.kind.startswith("db-"):
            yield
            return
        self.leased = self.work.sg.engine.raw_connection()
        try:
            yield
        finally:
            self.leased.close()

    def writer(self) -> Callable[[Service], None]:
        if self.kind.startswith("db-"):
            sql, params_for = raw_beat_sql(self.work.sg.engine)

            def write_sql(svc: Service) -> None:
                conn = self.leased.dbapi_connection
                cur = conn.cursor()
                cur.execute(sql, params_for(svc.uuid))
                cur.close()
                conn.commit()

            return write_sql
        # memcached and zookeeper: the write goes over the driver's own
        # connection (its pymemcache Client for this thread, its kazoo
        # session), so the ratio is the driver's code and nothing else. Over a
        # second connection it was not: memcached hands each connection to one
        # of its worker threads, and on this VM that placement alone moved a
        # set between ~20 and ~90 us, connection by connection (alternated).
        driver = self.work.sg.driver
        if self.kind == "memcached":
            ttl, client = driver.ttl, driver.servers[0].client()

            def write_mc(svc: Service) -> None:
                client.set(svc.uuid, b"%d|%d" % (time.time_ns() // 1000, svc.version), ttl)

            return write_mc
        if self.kind == "zookeeper":
            zk = driver._client

            def write_zk(svc: Service) -> None:
                zk.set(self.zk_paths[svc.uuid], self.zk_data[svc.uuid])

            return write_zk
        if self.kind == "tooz-redis":
            client = self.tooz._client
            ms_ttl = int(self.tooz.membership_timeout * 1000)

            def write_redis(svc: Service) -> None:
                beat = self.tooz._encode_beat_id(self.member_of(svc.host, svc.binary))
                client.psetex(beat, ms_ttl, self.tooz.STILL_ALIVE)

            return write_redis
        # tooz-zookeeper: tooz's heartbeat is a kazoo get of the namespace root,
        # on the service's own client (tooz keeps one ZooKeeper session per
        # member; its first heartbeat made it): the same client, as for the
        # other drivers. One shared client instead measured 1.35x faster.
        members, base = driver._members, self.tooz._base_path()

        def write_tooz_zk(svc: Service) -> None:
            members[svc.host, svc.binary].kazoo.get(base)

        return write_tooz_zk


class ToozZkCompare:
    """tooz's own get_members over the same members, in a tooz group on the same ZooKeeper."""

    def __init__(self, work: Workload) -> None:
        from tooz import coordination

        from servicegroup.drivers.tooz import group_id, member_id

        url = f"zookeeper://{work.target.env.zk.address}?namespace=sgbench-cmp-{work.target.tag}"
        self.coord = coordination.get_coordinator(url, b"sgbench-cmp")
        self.coord.start(start_heart=False)
        self.group = group_id(work.binary)
        with contextlib.suppress(coordination.GroupAlreadyExist):
            self.coord.create_group(self.group).get()
        pending = []
        for svc in work.beating:
            self.coord._member_id = member_id(svc.host, svc.binary)
            pending.append(self.coord.join_group(self.group, {"uuid": svc.uuid}))
        for result in pending:
            result.get()

    def read(self) -> set[bytes]:
        return self.coord.get_members(self.group).get(timeout=10)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.coord.stop()


# -- scenario 1: bulk liveness ------------------------------------------------------


def bench_bulk(work: Workload, reps: int) -> dict[str, Any]:
    sg, binary = work.sg, work.binary
    # An unchanged table is get_all's best case (a reader may reuse what it
    # built last time). Worst case: every row changed since the last read, as
    # when every service beat on the db driver: one UPDATE, untimed, before
    # each such read. Bumping report_count keeps who is up as it was.
    bump = (
        sa.update(services)
        .where(services.c.binary == binary)
        .values(report_count=services.c.report_count + 1)
    )

    def change_every_row() -> None:
        with sg.engine.begin() as conn:
            conn.execute(bump)

    raw = Raw(work)
    compare = ToozZkCompare(work) if work.target.name == "zookeeper" else None
    sample = work.services[:: max(1, len(work.services) // NOVA_SAMPLE)][:NOVA_SAMPLE]
    try:
        # Correctness first: every way of asking agrees on who is up.
        expected = work.expected_up()
        got = {s.service.uuid for s in sg.get_all(binary=binary) if s.state is State.UP}
        nova = {s.uuid for s in sample if sg.is_up(s.uuid)}
        raw_up = raw.read()
        before = {s.service.uuid: s.service for s in sg.get_all(binary=binary)}
        change_every_row()
        after = sg.get_all(binary=binary)
        agree = {
            "get_all": got == expected,
            "get_all_changed": {s.service.uuid for s in after if s.state is State.UP} == expected
            and all(
                s.service.report_count == before[s.service.uuid].report_count + 1 for s in after
            ),
            "nova_sample": nova == {s.uuid for s in sample} & expected,
            "raw": raw_up == expected,
        }
        rows = raw.sql.rows()
        variants: dict[str, Any] = {
            "get_all": lambda: sg.get_all(binary=binary),
            "get_all_changed": (change_every_row, lambda: sg.get_all(binary=binary)),
            "raw": raw.read,
            "nova_sample": lambda: [sg.is_up(s.uuid) for s in sample],
            "raw_sql_only": raw.sql.rows,
        }
        if not work.target.name.startswith("db-"):
            variants["raw_backend_only"] = lambda: raw.backend_read(rows)
        if work.target.name == "zookeeper":
            agree["raw_multiread"] = raw.read_multiread() == expected
            variants["raw_multiread"] = raw.read_multiread
            variants["raw_backend_multiread_only"] = raw.zk_multiread
        if compare is not None:
            agree["tooz"] = len(compare.read()) == len(expected)
            variants["tooz_get_members"] = compare.read
        elif work.target.name.startswith("tooz-"):
            variants["tooz_get_members"] = lambda: raw.tooz.get_members(raw.group).get()
        times = alternate(variants, reps)
    finally:
        raw.close()
        if compare is not None:
            compare.close()
    med = {name: statistics.median(values) for name, values in times.items()}
    nova_full = med["nova_sample"] / len(sample) * work.n
    return {
        "services": work.n,
        "up": len(expected),
        "reps": reps,
        "agree": agree,
        "get_all_ms": ms(med["get_all"]),
        "get_all_min_ms": ms(min(times["get_all"])),
        "get_all_changed_ms": ms(med["get_all_changed"]),
        "raw_ms": ms(med["raw"]),
        "raw_sql_only_ms": ms(med["raw_sql_only"]),
        "raw_backend_only_ms": ms(med.get("raw_backend_only")),
        "raw_multiread_ms": ms(med.get("raw_multiread")),
        "raw_backend_multiread_only_ms": ms(med.get("raw_backend_multiread_only")),
        "tooz_get_members_ms": ms(med.get("tooz_get_members")),
        "nova_per_call_ms": ms(med["nova_sample"] / len(sample)),
        "nova_sample": len(sample),
        "nova_extrapolated_ms": ms(nova_full),
        "speedup_vs_nova": ratio(nova_full, med["get_all"]),
        "ratio_vs_raw": ratio(med["get_all"], med["raw"]),
        "ratio_vs_raw_multiread": ratio(med["get_all"], med.get("raw_multiread")),
        "ratio_changed_vs_raw": ratio(med["get_all_changed"], med["raw"]),
        "ratio_vs_tooz": ratio(med["get_all"], med.get("tooz_get_members")),
    }


# -- scenario 2: heartbeat --------------------------------------------------------


@contextlib.contextmanager
def sql_counter(engine: sa.Engine) -> Iterator[dict[str, int]]:
    """Count what a heartbeat costs the database: statements, pre-pings, commits, rollbacks.

    Counted on the dialect's do_* methods, which every statement passes
    through, whether sent by a SQLAlchemy Connection or straight on a DBAPI
    connection (db/engine.py RawWrite, the heartbeat).
    """
    counts = {"statements": 0, "begins": 0, "pings": 0, "commits": 0, "rollbacks": 0}
    dialect = engine.dialect

    def statement(_cursor: Any, sql: str, *_args: Any) -> str:
        # SQLite's explicit BEGIN IMMEDIATE (db/engine.py writing()) is transaction
        # control, counted apart like the commit; "statements" is the SQL work.
        return "begins" if sql.lstrip().upper().startswith("BEGIN") else "statements"

    def wrap(name: str, key: Callable[..., str] | str) -> Callable[..., Any]:
        original = getattr(dialect, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[key(*args) if callable(key) else key] += 1
            return original(*args, **kwargs)

        return counted

    patched: dict[str, Callable[..., str] | str] = {
        "do_execute": statement,
        "do_execute_no_params": statement,
        "do_executemany": statement,
        "do_ping": "pings",
        "do_commit": "commits",
        "do_rollback": "rollbacks",
    }
    for name, key in patched.items():
        setattr(dialect, name, wrap(name, key))
    try:
        yield counts
    finally:
        for name in patched:
            delattr(dialect, name)


def bench_heartbeat(work: Workload, reps: int, per_block: int) -> dict[str, Any]:
    sg = work.sg
    targets = work.beating[:per_block]
    raw = Raw(work)
    write = raw.writer()
    lat: dict[str, list[float]] = {"heartbeat": [], "raw": []}
    blocks: dict[str, list[float]] = {"heartbeat": [], "raw": []}
    try:
        for svc in targets:  # first beat creates what the backend needs (tooz: a coordinator)
            sg.heartbeat(svc)
            with raw.lease():
                write(svc)
        variants = {"heartbeat": sg.heartbeat, "raw": write}
        for _ in range(reps):
            for name, fn in variants.items():
                with raw.lease() if name == "raw" else contextlib.nullcontext():
                    block_start = time.perf_counter()
                    for svc in targets:
                        start = time.perf_counter()
                        fn(svc)
                        lat[name].append(time.perf_counter() - start)
                    blocks[name].append(time.perf_counter() - block_start)
        sql = None
        if work.target.name.startswith("db-"):
            with sql_counter(sg.engine) as counts:
                for svc in targets:
                    sg.heartbeat(svc)
            sql = {k: round(v / len(targets), 3) for k, v in counts.items()}
    finally:
        raw.close()
    med_block = {k: statistics.median(v) for k, v in blocks.items()}
    return {
        "beats_per_block": len(targets),
        "reps": reps,
        "heartbeat_per_s": round(len(targets) / med_block["heartbeat"]),
        "raw_per_s": round(len(targets) / med_block["raw"]),
        "heartbeat_p50_ms": ms(pct(lat["heartbeat"], 50)),
        "heartbeat_p99_ms": ms(pct(lat["heartbeat"], 99)),
        "raw_p50_ms": ms(pct(lat["raw"], 50)),
        "raw_p99_ms": ms(pct(lat["raw"], 99)),
        "ratio_vs_raw": ratio(med_block["heartbeat"], med_block["raw"]),
        "sql_per_heartbeat": sql,
    }


# -- scenario 3 and 5: the daemon under wrk, and its memory ---------------------------


def config_text(url: str, port: int, options: dict[str, Any]) -> str:
    groups: dict[str, list[str]] = {"DEFAULT": [], "database": [f"connection = {url}"]}
    groups["api"] = ["host = 127.0.0.1", f"port = {port}"]
    for key, value in options.items():
        group, _, name = key.rpartition("__")
        text = ",".join(value) if isinstance(value, list) else value
        groups.setdefault(group or "DEFAULT", []).append(f"{name} = {text}")
    return "".join(f"[{g}]\n" + "\n".join(lines) + "\n" for g, lines in groups.items())


@contextlib.contextmanager
def daemon(target: Target, url: str, **timing: Any) -> Iterator[Daemon]:
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="sg-bench-daemon-", dir=target.env.tmp))
    conf = workdir / "servicegroup.conf"
    conf.write_text(config_text(url, port, target.options(**timing)))
    with running(Daemon(conf, port, workdir / "daemon.log").start()) as proc:
        yield proc


D = TypeVar("D", bound=Daemon)


@contextlib.contextmanager
def running(proc: D) -> Iterator[D]:
    """A started daemon once it answers; its log's tail printed if anything fails; stopped."""
    try:
        proc.wait_ready(60)
        yield proc
    except Exception:
        print(f"daemon log tail:\n{proc.log()[-3000:]}", file=sys.stderr)
        raise
    finally:
        proc.stop()


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return round(int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024, 1)


LAT_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk_command(
    url: str, ids_file: Path, seconds: float, connections: int, rate: int | None = None
) -> tuple[list[str], dict[str, str]]:
    """heartbeat.lua's wrk over ids_file, closed loop or paced at `rate`: argv and environment."""
    argv = [WRK or "wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    argv += ["--latency", "-s", str(LUA), url]
    env = {
        **os.environ,
        "SG_IDS": str(ids_file),
        "SG_RATE": str(rate or ""),
        "SG_THREADS": str(WRK_THREADS),
    }
    return argv, env


def run_wrk(
    url: str, ids_file: Path, seconds: float, connections: int, rate: int | None = None
) -> dict[str, Any]:
    argv, env = wrk_command(url, ids_file, seconds, connections, rate)
    out = subprocess.run(
        argv, env=env, capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> dict[str, Any]:
    """heartbeat.lua's wrk report: requests, rate, latency percentiles, errors."""
    dist = {
        int(p): float(v) * LAT_UNITS[u]
        for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    }
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {
        "requests": requests,
        "per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": dist.get(50),
        "p75_ms": dist.get(75),
        "p90_ms": dist.get(90),
        "p99_ms": dist.get(99),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": sock.group(1) if sock else None,
    }


def run_paced_sql(url: str, ids_file: Path, seconds: float) -> dict[str, Any]:
    """paced_sql.py in its own process: the daemon's paced window, straight to the database."""
    argv = [sys.executable, str(PACED_SQL), "--url", url, "--ids", str(ids_file)]
    argv += ["--rate", str(PACED_RATE), "--seconds", str(seconds)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 60)
    return json.loads(out.stdout)


def run_bare_tooz(url: str, members: int, seconds: float) -> dict[str, Any]:
    """bare_tooz.py in its own process: one paced window on a bare heartbeat() route."""
    argv = [sys.executable, str(BARE_TOOZ), "--url", url, "--members", str(members)]
    argv += ["--rate", str(PACED_RATE), "--seconds", str(seconds)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 120)
    result = json.loads(out.stdout)
    (window,) = result["windows"]
    return {**window, "heartbeats": result["heartbeats"], "members": result["members"]}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median p99 (the upper one of two): one window's figures, not a blend."""
    return sorted(runs, key=lambda r: r["p99_ms"])[len(runs) // 2]


def beat_each(url: str, ids: list[str], workers: int = 8) -> None:
    """POST one heartbeat for every id, from a few keep-alive clients."""

    def beat(start: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            for uuid in ids[start::workers]:
                client.post(f"/v1/services/{uuid}/heartbeat").raise_for_status()

    threads = [threading.Thread(target=beat, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def settle(url: str, binary: str, timeout: float = 180.0) -> float:
    """Wait until the sweeper has recorded every up service's first transition; seconds waited.

    The rows start with observed_state "down" while 90% of them beat: the
    daemon's first sweeps write one event per service (what a fleet start
    costs), and the measured windows are meant for the steady state after.
    """
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=60) as client:
        listed = client.get("/v1/services", params={"binary": binary, "state": "up"})
        up = len(listed.raise_for_status().json()["services"])
        seen, cursor = 0, 0
        while seen < up:
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"the sweeper recorded {seen} of {up} up events in {timeout:g}s")
            params = {"since": cursor, "binary": binary, "limit": 1000, "wait": 2}
            body = client.get("/v1/events", params=params).raise_for_status().json()
            cursor = body["cursor"]
            seen += sum(event["state"] == "up" for event in body["events"])
    return time.monotonic() - started


def bench_daemon(work: Workload, seconds: float, reps: int, rotate: int | None) -> dict[str, Any]:
    if WRK is None:
        return {"skipped": "wrk is not installed (Debian package wrk)"}
    ids = [s.uuid for s in work.services][:rotate]
    ids_file = work.target.env.tmp / f"ids-{work.target.tag}.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    # The daemon judges with its own down time; long, so nothing flaps mid-run.
    timing = {"report_interval": BENCH_DOWN_TIME / 10, "service_down_time": BENCH_DOWN_TIME}
    with daemon(work.target, work.url, **timing) as proc:
        assert proc.proc is not None
        pid = proc.proc.pid
        rss_idle = rss_mb(pid)
        # Warm-up: one beat for every id fills the daemon's record cache, as
        # the first report_interval of a real fleet would. (A wrk run of a
        # fixed length covered only the ids it reached: half of them for a
        # daemon at 750 beats/s, whose measured windows then paid a SELECT
        # per first beat.)
        beat_each(proc.url, ids)
        first_sweep_s = settle(proc.url, work.binary)
        beat = run_wrk(proc.url, ids_file, seconds, 50)
        # The target's "1,000 beats/s sustained": the same 50 connections
        # at a fixed offered rate above it (see heartbeat.lua), PACED_ROUNDS
        # times, alternated on SQL servers with the same writes sent to the
        # database straight (paced_sql.py), and on tooz-zookeeper with the
        # same window on a bare route (bare_tooz.py): the floor of its p99.
        paced_runs, raw_runs = [], []
        for _ in range(PACED_ROUNDS):
            paced_runs.append(run_wrk(proc.url, ids_file, seconds, 50, rate=PACED_RATE))
            if work.target.dialect in PACED_RAW_DIALECTS:
                raw_runs.append(run_paced_sql(work.url, ids_file, seconds))
            elif work.target.name in PACED_BARE_TARGETS:
                url = work.target.options()["tooz__backend_url"]
                raw_runs.append(run_bare_tooz(url, len(ids), seconds))
        rss_beating = rss_mb(pid)
        with httpx.Client(base_url=proc.url, timeout=60) as client:
            wanted = {"services": f"/v1/services?binary={work.binary}", "metrics": "/metrics"}
            checks = {}
            for name, path in wanted.items():  # correctness, and a warm-up
                resp = client.get(path)
                checks[name] = resp.status_code
                if name == "services":
                    listed = resp.json()["services"]
                    checks["services_listed"] = len(listed)
                    checks["services_up"] = sum(s["state"] == "up" for s in listed)
            fetch = {
                name: (lambda p=path: client.get(p).raise_for_status())
                for name, path in wanted.items()
            }
            times = alternate(fetch, reps)
        rss_after = rss_mb(pid)
    return {
        "services": work.n,
        "rotated_ids": len(ids),
        "wrk_seconds": seconds,
        "connections": 50,
        "first_sweep_s": round(first_sweep_s, 2),
        "heartbeat": beat,
        "heartbeat_paced": {**median_run(paced_runs), "offered_per_s": PACED_RATE},
        "heartbeat_paced_runs": paced_runs,
        "raw_paced_runs": raw_runs,
        "checks": checks,
        "get_services_ms": ms(statistics.median(times["services"])),
        "get_services_max_ms": ms(max(times["services"])),
        "metrics_ms": ms(statistics.median(times["metrics"])),
        "metrics_max_ms": ms(max(times["metrics"])),
        "reps": reps,
        "rss_mb": {"idle": rss_idle, "beating": rss_beating, "after_reads": rss_after},
    }


# -- scenario 4: detection --------------------------------------------------------


def bench_detection(target: Target, url: str, reps: int) -> dict[str, Any]:
    timing = {"report_interval": 0.1, "service_down_time": 1.0}
    sweep = 0.2
    extra: dict[str, Any] = {}
    bound_name, bound = "service_down_time", timing["service_down_time"]
    if target.name == "zookeeper":
        extra["zookeeper__session_timeout"] = 1.0
        bound_name, bound = "session_timeout", 1.0
    options = {**target.options(**timing), **extra}
    runs = []
    binary = f"detect-{target.tag}"
    with (
        daemon(target, url, **timing, **extra, events__sweep_interval=sweep) as proc,
        ServiceGroup.from_options(database__connection=url, **options) as sg,
        httpx.Client(base_url=proc.url, timeout=30) as client,
    ):
        for rep in range(reps):
            child_opts = {**options, "database__connection": url}
            child_opts.update(host=f"victim-{rep}", binary=binary)
            child = subprocess.Popen(
                [sys.executable, str(CHILD), json.dumps(child_opts)],
                stdout=subprocess.PIPE,
                cwd=ROOT,
                text=True,
            )
            try:
                uuid = child.stdout.readline().strip()
                if not uuid:
                    raise RuntimeError(f"reporting child exited {child.wait()}")
                deadline = time.monotonic() + 30
                while not sg.is_up(uuid) and time.monotonic() < deadline:
                    time.sleep(0.02)
                cursor = wait_event(client, binary, uuid, "up", 0, deadline)
                event_at: list[float] = []

                def watch(uuid: str = uuid, since: int = cursor, seen: list = event_at) -> None:
                    wait_event(client, binary, uuid, "down", since, time.monotonic() + 30)
                    seen.append(time.monotonic())

                watcher = threading.Thread(target=watch)
                watcher.start()
                killed = time.monotonic()
                child.send_signal(signal.SIGKILL)
                down_at = None
                while time.monotonic() < killed + 30:
                    if not sg.is_up(uuid):
                        down_at = time.monotonic()
                        break
                    time.sleep(0.01)
                watcher.join(35)
            finally:
                child.kill()
                child.wait()
            runs.append(
                {
                    "down_s": None if down_at is None else round(down_at - killed, 3),
                    "event_s": round(event_at[0] - killed, 3) if event_at else None,
                }
            )
    downs = [r["down_s"] for r in runs if r["down_s"] is not None]
    events = [r["event_s"] for r in runs if r["event_s"] is not None]
    worst_down = max(downs) if len(downs) == len(runs) else None
    worst_event = max(events) if len(events) == len(runs) else None
    return {
        "runs": runs,
        "report_interval": timing["report_interval"],
        "service_down_time": timing["service_down_time"],
        "sweep_interval": sweep,
        "bound": f"{bound_name} + 1 s",
        "down_worst_s": worst_down,
        "event_worst_s": worst_event,
        "event_after_down_worst_s": max(
            (r["event_s"] - r["down_s"] for r in runs if r["event_s"] and r["down_s"]),
            default=None,
        ),
        "down_met": worst_down is not None and worst_down <= bound + 1,
        "event_met": worst_event is not None
        and worst_down is not None
        and all(r["event_s"] - r["down_s"] <= sweep for r in runs),
    }


def wait_event(
    client: httpx.Client, binary: str, uuid: str, state: str, since: int, deadline: float
) -> int:
    """Long-poll the event stream until `uuid` reaches `state`; the cursor just past it."""
    while time.monotonic() < deadline:
        left = max(0.0, min(5.0, deadline - time.monotonic()))
        page = client.get(
            "/v1/events", params={"since": since, "binary": binary, "wait": left}
        ).json()
        for ev in page["events"]:
            if ev["service_id"] == uuid and ev["state"] == state:
                return ev["id"]
        since = page["cursor"]
    raise TimeoutError(f"no {state} event for {uuid}")


# -- driving it all -----------------------------------------------------------------


@dataclass
class Plan:
    sizes: list[int]
    reps: int
    beats: int
    wrk_seconds: float
    http_reps: int
    detect_reps: int
    daemon: bool = True
    detection: bool = True


def bench_target(target: Target, plan: Plan, log: Callable[[str], None]) -> dict[str, Any]:
    result: dict[str, Any] = {"bulk": {}}
    target.check()
    try:
        for n in plan.sizes:
            with target.env.database(target.dialect) as url:
                log(f"{target.name}: {n} services, populating")
                work = Workload(target, n, url)
                try:
                    log(f"{target.name}: {n} services, bulk liveness")
                    result["bulk"][str(n)] = bench_bulk(work, plan.reps)
                    if n == min(plan.sizes):
                        log(f"{target.name}: heartbeat")
                        beats = min(plan.beats, TOOZ_BEATERS.get(target.name, plan.beats))
                        result["heartbeat"] = bench_heartbeat(work, plan.reps, beats)
                    if n == max(plan.sizes) and plan.daemon:
                        # tooz keeps one coordinator (connection, session) per
                        # beating service: 10,000 would be 10,000 connections.
                        rotate = TOOZ_BEATERS.get(target.name)
                        log(f"{target.name}: daemon under wrk")
                        result["daemon"] = bench_daemon(
                            work, plan.wrk_seconds, plan.http_reps, rotate
                        )
                finally:
                    work.close()
        if plan.detection:
            with target.env.database(target.dialect) as url:
                log(f"{target.name}: detection")
                result["detection"] = bench_detection(target, url, plan.detect_reps)
    finally:
        target.cleanup()
    return result


def table(report: dict[str, Any]) -> str:
    lines = []
    m = report["machine"]
    lines.append(
        f"machine: {m['cores']} cores, {m['memory_mb']} MB, load {m['loadavg']} -> "
        f"{report['loadavg_end']}, python {m['python']}"
    )
    head = (
        f"{'driver':<15}{'N':>6}{'get_all':>10}{'raw':>9}{'x raw':>7}"
        f"{'changed':>9}{'x raw':>7}{'nova(ext)':>11}{'x faster':>10}{'tooz':>9}"
        f"{'raw mr':>9}{'x mr':>7}"
    )
    lines += ["", "bulk liveness, ms (median)", head]
    for name, res in report["targets"].items():
        if "error" in res:
            lines.append(f"{name:<15} skipped: {res['error']}")
            continue
        for n, b in res["bulk"].items():
            tooz = "-" if b["tooz_get_members_ms"] is None else f"{b['tooz_get_members_ms']:.1f}"
            # zookeeper only: the floor with multiRead (the driver's read) beside kazoo's gets.
            mr_ms, mr_x = b.get("raw_multiread_ms"), b.get("ratio_vs_raw_multiread")
            raw_mr = "-" if mr_ms is None else f"{mr_ms:.1f}"
            x_mr = "-" if mr_x is None else f"{mr_x:.2f}"
            lines.append(
                f"{name:<15}{n:>6}{b['get_all_ms']:>10.1f}{b['raw_ms']:>9.1f}"
                f"{b['ratio_vs_raw']:>7.2f}{b['get_all_changed_ms']:>9.1f}"
                f"{b['ratio_changed_vs_raw']:>7.2f}{b['nova_extrapolated_ms']:>11.0f}"
                f"{b['speedup_vs_nova']:>10.0f}{tooz:>9}{raw_mr:>9}{x_mr:>7}"
            )
    lines += [
        "",
        "heartbeat (sequential, one thread)",
        f"{'driver':<15}{'beats/s':>9}{'raw/s':>9}{'x raw':>7}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'raw p50':>9}{'raw p99':>9}{'SQL/beat':>10}",
    ]
    for name, res in report["targets"].items():
        h = res.get("heartbeat")
        if not h:
            continue
        sql = h["sql_per_heartbeat"]
        lines.append(
            f"{name:<15}{h['heartbeat_per_s']:>9}{h['raw_per_s']:>9}{h['ratio_vs_raw']:>7.2f}"
            f"{h['heartbeat_p50_ms']:>8.3f}{h['heartbeat_p99_ms']:>8.3f}"
            f"{h['raw_p50_ms']:>9.3f}{h['raw_p99_ms']:>9.3f}"
            f"{'-' if sql is None else sql['statements']:>10}"
        )
    lines += [
        "",
        "daemon (wrk, 50 connections)",
        f"{'driver':<15}{'N':>6}{'beats/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}"
        f"{'paced/s':>9}{'p99s ms':>13}{'raw p99s':>13}{'GET list':>10}{'metrics':>9}"
        f"{'RSS MB':>8}",
    ]
    for name, res in report["targets"].items():
        d = res.get("daemon")
        if not d or "skipped" in d:
            continue
        hb, paced = d["heartbeat"], d["heartbeat_paced"]
        errors = hb["non_2xx"] + sum(r["non_2xx"] for r in d["heartbeat_paced_runs"])
        p99s = "/".join(f"{r['p99_ms']:.1f}" for r in d["heartbeat_paced_runs"])
        raw_p99s = "/".join(f"{r['p99_ms']:.1f}" for r in d["raw_paced_runs"]) or "-"
        lines.append(
            f"{name:<15}{d['rotated_ids']:>6}{hb['per_s']:>9.0f}{hb['p50_ms']:>8.2f}"
            f"{hb['p99_ms']:>8.2f}{errors:>7}{paced['per_s']:>9.0f}{p99s:>13}{raw_p99s:>13}"
            f"{d['get_services_ms']:>10.1f}{d['metrics_ms']:>9.1f}{d['rss_mb']['after_reads']:>8.1f}"
        )
    lines += ["", "detection after SIGKILL, s (worst of runs)"]
    lines.append(f"{'driver':<15}{'down':>7}{'event':>7}  bound")
    for name, res in report["targets"].items():
        d = res.get("detection")
        if d:
            lines.append(
                f"{name:<15}{d['down_worst_s'] or float('nan'):>7.2f}"
                f"{d['event_worst_s'] or float('nan'):>7.2f}  {d['bound']}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--driver",
        action="append",
        help=f"target(s), comma-separated or repeated: {', '.join(DRIVERS)} "
        "('db' means db-sqlite, 'tooz' tooz-redis)",
    )
    parser.add_argument("--all", action="store_true", help="every target")
    parser.add_argument("--services", type=int, action="append", help="N (default 1000 and 10000)")
    parser.add_argument("--quick", action="store_true", help="a few hundred services, seconds")
    parser.add_argument("--reps", type=int, help="repetitions of each alternated measurement")
    parser.add_argument("--wrk-seconds", type=float, help="measured wrk run per daemon")
    parser.add_argument("--no-daemon", action="store_true")
    parser.add_argument("--no-detection", action="store_true")
    parser.add_argument("--json", type=Path, help="write the full results here")
    args = parser.parse_args(argv)

    aliases = {"db": "db-sqlite", "tooz": "tooz-redis", "zk": "zookeeper", "mc": "memcached"}
    names = [
        aliases.get(n.strip(), n.strip()) for spec in args.driver or [] for n in spec.split(",")
    ]
    if args.all or not names:
        names = list(DRIVERS)
    unknown = [n for n in names if n not in DRIVERS]
    if unknown:
        parser.error(f"unknown driver(s): {', '.join(unknown)}")
    if args.quick:
        plan = Plan([args.services[0] if args.services else 300], 3, 50, 1.0, 3, 1)
    else:
        plan = Plan(sorted(args.services or [1000, 10000]), 7, 200, 10.0, 7, 3)
    plan.reps = args.reps or plan.reps
    plan.wrk_seconds = args.wrk_seconds or plan.wrk_seconds
    plan.daemon, plan.detection = not args.no_daemon, not args.no_detection

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, "bench/run.py", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "plan": plan.__dict__,
        "targets": {},
    }
    report["targets"], failed = measure_targets(
        names, lambda target: bench_target(target, plan, log), log, unavailable_fails=False
    )
    finish(report, table, args.json)
    return 1 if failed else 0


def measure_targets(
    names: Sequence[str],
    measure: Callable[[Target], dict[str, Any]],
    log: Callable[[str], None],
    unavailable_fails: bool = True,
) -> tuple[dict[str, Any], bool]:
    """Each target's figures, or its error, on one Env; and whether any target failed.

    One broken target must not lose the others' figures: its error is
    reported in its place and the next one runs. A target whose servers are
    missing (Unavailable) counts as a failure unless told otherwise.
    """
    results: dict[str, Any] = {}
    failed = False
    env = Env()
    try:
        for name in names:
            try:
                results[name] = measure(Target(name, env))
            except Unavailable as exc:
                log(f"{name}: skipped, {exc}")
                results[name] = {"error": str(exc)}
                failed = failed or unavailable_fails
            except Exception as exc:
                log(f"{name}: FAILED, {type(exc).__name__}: {exc}")
                results[name] = {"error": f"failed: {type(exc).__name__}: {exc}"}
                failed = True
    finally:
        env.close()
    return results, failed


def finish(
    report: dict[str, Any], table: Callable[[dict[str, Any]], str], path: Path | None
) -> None:
    """The end of every bench script: the load at the end, the table printed, the JSON written."""
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(table(report))
    if path:
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
