"""Three daemons behind haproxy, on PostgreSQL and a three-node ZooKeeper ensemble.

The deployment issue 18 asks for: any number of `servicegroup serve`
processes share one records database and one liveness backend, coordinated
by nothing but the SQL sweeper lease, with a load balancer in front. While a
fleet beats and registers through haproxy, the sweeping daemon is killed,
then the ZooKeeper leader. Expected: no service is reported down (its beats
reach another daemon, and the znodes are persistent: node_lifetime =
heartbeat), no acknowledged registration is lost, and another daemon takes
the sweep over within the lease.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import empty_tables, unavailable
from tests.functional.daemon import Daemon, config_text
from tests.helpers import wait_for
from tests.servers import ServerUnavailable, ZooKeeperEnsemble, free_port, wait_port

FLEET = 60
REPORT_INTERVAL = 0.5
DOWN_TIME = 8.0
SWEEP_INTERVAL = 0.25
LEASE = 1.0
# Death to takeover: the lease must run out, then a sweep must come round.
TAKEOVER_BOUND = LEASE + SWEEP_INTERVAL + 2.0  # + slack for a loaded CI machine


@pytest.fixture
def ensemble() -> Iterator[ZooKeeperEnsemble]:
    try:
        started = ZooKeeperEnsemble().start()
    except ServerUnavailable as exc:
        unavailable("a ZooKeeper ensemble", exc)
    try:
        yield started
    finally:
        started.cleanup()


class HAProxy:
    """Debian's haproxy in the foreground, round robin over the daemons, /healthz checked."""

    def __init__(self, workdir: Path, backends: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        servers = "".join(
            f"    server d{i} {address} check inter 200ms fall 2 rise 2\n"
            for i, address in enumerate(backends)
        )
        self.config = workdir / "haproxy.cfg"
        self.config.write_text(
            "global\n    maxconn 2048\n"
            "defaults\n    mode http\n    timeout connect 1s\n"
            "    timeout client 30s\n    timeout server 30s\n"
            "    retries 3\n    option redispatch\n"
            f"frontend fleet\n    bind 127.0.0.1:{self.port}\n    default_backend daemons\n"
            "backend daemons\n    balance roundrobin\n    option httpchk GET /healthz\n" + servers
        )
        self.log = workdir / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> HAProxy:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(binary).exists():
            unavailable("haproxy", "the load balancer (Debian package haproxy)")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, "-db", "-f", str(self.config)], stdout=log, stderr=log
            )
        wait_port(self.port, 10, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Fleet:
    """Agents beating through the load balancer, and a stream of new registrations."""

    def __init__(self, url: str, ids: list[str]) -> None:
        self.url = url
        self.ids = ids
        self.failed_beats = 0
        self.acknowledged: set[str] = set()  # registrations the API said were done
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Fleet:
        for share in range(4):
            self._spawn(self._beat, self.ids[share::4])
        self._spawn(self._register)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _beat(self, ids: list[str]) -> None:
        with httpx.Client(base_url=self.url, timeout=5.0) as http:
            while not self._stop.is_set():
                for sid in ids:
                    try:
                        ok = http.post(f"/v1/services/{sid}/heartbeat").status_code == 204
                    except httpx.TransportError:
                        ok = False
                    self.failed_beats += not ok
                self._stop.wait(REPORT_INTERVAL)

    def _register(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5.0) as http:
            while not self._stop.is_set():
                body = {"host": f"new-{uuid.uuid4().hex[:8]}", "binary": "late"}
                while not self._stop.is_set():  # an agent retries until it is told yes
                    try:
                        answer = http.post("/v1/services", json=body)
                    except httpx.TransportError:
                        continue
                    if answer.status_code in (200, 201):
                        self.acknowledged.add(answer.json()["id"])
                        break
                self._stop.wait(0.05)


def sweep_leader(daemons: list[Daemon]) -> Daemon | None:
    """The daemon whose /metrics says it sweeps (asked directly, not through haproxy)."""
    for daemon in daemons:
        try:
            text = httpx.get(f"{daemon.url}/metrics", timeout=5.0).text
        except httpx.TransportError:
            continue
        for family in text_string_to_metric_families(text):
            if family.name == "servicegroup_sweep_leader" and family.samples[0].value == 1:
                return daemon
    return None


def test_killing_a_daemon_then_the_zookeeper_leader_loses_nothing(
    tmp_path: Path, postgresql_db: str, ensemble: ZooKeeperEnsemble
) -> None:
    empty_tables(postgresql_db)
    options = {
        "driver": "zookeeper",
        "report_interval": REPORT_INTERVAL,
        "service_down_time": DOWN_TIME,
        "zookeeper__hosts": ensemble.hosts,
        "zookeeper__root": f"/sg-{uuid.uuid4().hex[:10]}",
        "zookeeper__session_timeout": 4.0,
        "zookeeper__connect_timeout": 2.0,
        "events__sweep_interval": SWEEP_INTERVAL,
        "events__leader_lease": LEASE,
    }
    daemons = []
    for i in range(3):
        port = free_port()
        config = tmp_path / f"daemon{i}.conf"
        config.write_text(config_text(postgresql_db, port, options))
        daemons.append(Daemon(config, port, tmp_path / f"daemon{i}.log").start())
    proxy = HAProxy(tmp_path, [d.url.removeprefix("http://") for d in daemons])
    fleet = None
    try:
        for daemon in daemons:
            daemon.wait_ready()
        proxy.start()
        http = httpx.Client(base_url=proxy.url, timeout=10.0)
        wait_for(lambda: http.get("/healthz").status_code == 200, "haproxy to reach a daemon", 30)
        ids = [
            http.post("/v1/services", json={"host": f"compute-{i}", "binary": "fleet"}).json()["id"]
            for i in range(FLEET)
        ]
        fleet = Fleet(proxy.url, ids).start()

        def all_seen_up() -> bool:
            events = http.get("/v1/events", params={"binary": "fleet"}).json()["events"]
            return len({e["service_id"] for e in events if e["state"] == "up"}) == FLEET

        wait_for(all_seen_up, "the sweeper to record every service up", 30)
        cursor = max(e["id"] for e in http.get("/v1/events").json()["events"])

        leader = wait_for(lambda: sweep_leader(daemons), "a sweep leader")
        assert leader.proc is not None
        leader.proc.kill()  # SIGKILL: no goodbye, the lease just stops being renewed
        killed_at = time.monotonic()
        survivors = [d for d in daemons if d is not leader]
        successor = wait_for(lambda: sweep_leader(survivors), "another daemon to sweep")
        takeover = time.monotonic() - killed_at
        assert successor in survivors
        assert takeover <= TAKEOVER_BOUND, f"takeover took {takeover:.2f}s"

        time.sleep(2 * REPORT_INTERVAL)
        zk_leader = ensemble.leader()
        zk_leader.kill()
        wait_for(
            lambda: any(m.mode() == "leader" for m in ensemble.members if m is not zk_leader),
            "a new ZooKeeper leader",
        )
        time.sleep(4 * REPORT_INTERVAL)
        fleet.stop()

        after = http.get("/v1/events", params={"since": cursor, "limit": 1000}).json()["events"]
        downs = [e for e in after if e["binary"] == "fleet" and e["state"] == "down"]
        assert downs == [], f"false downs: {downs}"
        listed = {s["id"]: s for s in http.get("/v1/services").json()["services"]}
        assert fleet.acknowledged and fleet.acknowledged <= listed.keys(), "lost registrations"
        assert all(listed[sid]["state"] == "up" for sid in ids)
        print(
            f"takeover {takeover:.2f}s; failed beats {fleet.failed_beats}; "
            f"registrations {len(fleet.acknowledged)}; unknown events "
            f"{sum(e['state'] == 'unknown' for e in after)}"
        )
        http.close()
    finally:
        if fleet is not None:
            fleet.stop()
        proxy.stop()
        for daemon in daemons:
            daemon.stop()
    for daemon in daemons:
        assert "Traceback" not in daemon.log(), daemon.log()
