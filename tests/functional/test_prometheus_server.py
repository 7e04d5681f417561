"""A real Prometheus scrapes a real daemon, evaluates etc/servicegroup-alerts.yml, and runs
every query of etc/servicegroup-dashboard.json.

promtool's unit tests (tests/unit/test_alert_rules.py) feed the rules series
we wrote by hand; here the series are the daemon's own /metrics, so a rule
that names a label the daemon does not export, or a condition the daemon
never produces, is caught. One Prometheus (Debian's package) and one daemon
serve the whole module: a fleet beating through memcached, records in
SQLite, a sweeper every 0.2 s and one event hook that a test can make fail
or hang.

The rules are loaded from a copy in which every duration (each `for:` and
each range selector) is divided by SPEEDUP, so "2m" becomes 0.5 s; the
expressions are otherwise the file's. Each test makes one
alert's condition true the way it happens in production, waits for the
alert to fire, undoes it and waits for it to resolve. Waits are polls with a
generous deadline, never a timing assertion.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select, update

from servicegroup import ServiceGroup
from servicegroup.db.engine import writing
from servicegroup.db.models import leases, server_now
from servicegroup.leader import lease
from servicegroup.reporter import Reporter
from servicegroup.service import Registration, Service
from tests import dashboard_queries
from tests.conftest import sqlite_db, unavailable
from tests.functional.daemon import Daemon, config_text, free_port
from tests.helpers import wait_for
from tests.servers import MemcachedServer, PrometheusServer, ServerUnavailable

RULES = Path(__file__).resolve().parents[2] / "etc" / "servicegroup-alerts.yml"
SPEEDUP = 240  # rule durations in the copy: 2m -> 0.5 s, 10m -> 2.5 s
SCRAPE = 0.25  # Prometheus' scrape and evaluation interval, seconds
PATIENCE = 30.0  # a hang guard for every wait, never a performance bound
RATE_WINDOW = "5s"  # the dashboard's $__rate_interval: 20 scrapes
DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
RANGE = re.compile(r"\[((?:\d+(?:ms|s|m|h|d|w|y))+)\]")

# The fleet: (host, binary, availability zone). One compute of three may die
# without mass-down protection (threshold 0.5) holding its event back.
FLEET = [
    ("compute-1", "nova-compute", "az1"),
    ("compute-2", "nova-compute", "az1"),
    ("compute-3", "nova-compute", "az2"),
    ("conductor-1", "nova-conductor", "internal"),
]
# hooks.QUEUE_SIZE events wait behind a hung hook; more than that are dropped.
DROPPING_BATCH = 1100


def seconds(duration: str) -> float:
    """A Prometheus duration ("1h30m", "500ms") in seconds."""
    parts = DURATION.findall(duration)
    assert "".join(f"{n}{u}" for n, u in parts) == duration, duration
    return sum(int(n) * UNIT[u] for n, u in parts)


def shortened(duration: str) -> str:
    return f"{max(1, round(seconds(duration) * 1000 / SPEEDUP))}ms"


def fast_rules(text: str) -> dict[str, Any]:
    """The rules with every `for:` and range selector divided by SPEEDUP, nothing else changed."""
    rules: dict[str, Any] = yaml.safe_load(text)
    for rule in each_rule(rules):
        if "for" in rule:
            rule["for"] = shortened(rule["for"])
        rule["expr"] = RANGE.sub(lambda m: f"[{shortened(m.group(1))}]", rule["expr"])
    return rules


def each_rule(rules: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in rules["groups"] for rule in group["rules"]]


def alert_names() -> list[str]:
    return [rule["alert"] for rule in each_rule(yaml.safe_load(RULES.read_text()))]


class PromAPI:
    """The few calls of Prometheus' HTTP API the tests make; an error answer fails the test."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _get(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10.0)
        body = response.json()
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result; AssertionError (with Prometheus' error) if it fails."""
        data = self._get("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of a query that answers one series, None if it answers none."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self._get("alerts")["alerts"]
        return alerts

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self._get("rules")["groups"] for rule in group["rules"]]


@dataclass
class Stage:
    """The module's servers and fleet, and the knobs that break them."""

    tmp: Path
    memcached: MemcachedServer
    daemon_config: Path
    daemon_port: int
    daemon: Daemon
    prometheus: PrometheusServer
    prom: PromAPI
    sg: ServiceGroup
    services: dict[str, Service]
    reporters: dict[str, Reporter]
    hook_fails: Path  # the event hook fails while this file exists
    hook_hangs: Path  # and hangs while this one does
    stop_beating: threading.Event = field(default_factory=threading.Event)
    beaters: list[threading.Thread] = field(default_factory=list)

    def silence(self, host: str) -> None:
        """The service stops beating, as its process would if it hung or died."""
        self.reporters.pop(host).stop()

    def resume(self, host: str) -> None:
        self.reporters[host] = self.sg.join(self.services[host])

    def start_daemon(self) -> None:
        log = self.tmp / f"daemon-{uuid.uuid4().hex[:6]}.log"
        self.daemon = Daemon(self.daemon_config, self.daemon_port, log).start().wait_ready()


def hook_script(tmp: Path, fails: Path, hangs: Path) -> Path:
    """An event hook that succeeds, unless told by a file to fail or to hang."""
    script = tmp / "hook.sh"
    script.write_text(
        "#!/bin/sh\n"
        "cat >/dev/null\n"
        f"while [ -e '{hangs}' ]; do sleep 0.05; done\n"
        f"test ! -e '{fails}'\n"
    )
    script.chmod(0o755)
    return script


def prometheus_config(target: str, rules_file: str) -> dict[str, Any]:
    interval = f"{round(SCRAPE * 1000)}ms"
    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": [rules_file],
        "scrape_configs": [{"job_name": "servicegroup", "static_configs": [{"targets": [target]}]}],
    }


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    if shutil.which("prometheus") is None:
        unavailable("Prometheus", "no `prometheus` binary (scripts/install-test-backends.sh)")
    tmp = tmp_path_factory.mktemp("prometheus-stage")
    with contextlib.ExitStack() as stack:
        memcached = MemcachedServer()
        stack.callback(memcached.cleanup)
        try:
            memcached.start()
        except ServerUnavailable as exc:
            unavailable("memcached", exc)
        records = sqlite_db(tmp)
        options: dict[str, Any] = {
            "driver": "memcached",
            "memcached__servers": [memcached.address],
            "memcached__key_prefix": f"sg-{uuid.uuid4().hex[:8]}:",
            "memcached__socket_timeout": 0.5,
            "memcached__connect_timeout": 0.5,
            "report_interval": 0.1,
            "service_down_time": 1.0,
        }
        sg = ServiceGroup.from_options(database__connection=records, **options)
        stack.callback(sg.close)
        services = {
            host: sg.register(host, binary, topic=binary, availability_zone=zone)
            for host, binary, zone in FLEET
        }
        reporters = {host: sg.join(service) for host, service in services.items()}
        # A claim held throughout by a healthy service: the claims panel's data.
        sg.claim(services["compute-1"], "instance", "i-live", "building")

        fails, hangs = tmp / "hook-fails", tmp / "hook-hangs"
        port = free_port()
        daemon_config = tmp / "daemon.conf"
        daemon_options = {
            **options,
            "events__sweep_interval": 0.2,
            "events__hooks": str(hook_script(tmp, fails, hangs)),
            # A hung hook must count as dropping events, not as failing.
            "events__hook_timeout": 120.0,
            "claims__grace": 0.2,
        }
        daemon_config.write_text(config_text(records, port, daemon_options))
        daemon = Daemon(daemon_config, port, tmp / "daemon.log").start()
        stack.callback(daemon.stop)

        prometheus = PrometheusServer()
        stack.callback(prometheus.cleanup)
        (prometheus.workdir / "rules.yml").write_text(
            yaml.safe_dump(fast_rules(RULES.read_text()), sort_keys=False)
        )
        (prometheus.workdir / prometheus.config_name).write_text(
            yaml.safe_dump(prometheus_config(f"127.0.0.1:{port}", "rules.yml"))
        )
        try:
            prometheus.start()
        except ServerUnavailable as exc:
            raise AssertionError(f"Prometheus did not start: {exc}") from exc
        # After Prometheus: its first scrape waits some 5 s for the scrape
        # manager anyway, and the daemon starts meanwhile.
        daemon.wait_ready()

        stage_ = Stage(
            tmp=tmp,
            memcached=memcached,
            daemon_config=daemon_config,
            daemon_port=port,
            daemon=daemon,
            prometheus=prometheus,
            prom=PromAPI(prometheus.url),
            sg=sg,
            services=services,
            reporters=reporters,
            hook_fails=fails,
            hook_hangs=hangs,
        )
        # Run last to first: the beaters and reporters stop, then the daemon
        # (test_daemon_absent may have replaced it), then the hung hook ends.
        stack.callback(hangs.unlink, missing_ok=True)
        stack.callback(lambda: stage_.daemon.stop())
        stack.callback(lambda: [reporter.stop() for reporter in stage_.reporters.values()])
        stack.callback(lambda: [thread.join() for thread in stage_.beaters])
        stack.callback(stage_.stop_beating.set)
        yield stage_


def active(prom: PromAPI, name: str, state: str | None = None, **labels: str) -> list[Any]:
    """The alerts called `name` whose labels include `labels`, in `state` (any if None)."""
    return [
        alert
        for alert in prom.alerts()
        if alert["labels"]["alertname"] == name
        and (state is None or alert["state"] == state)
        and all(alert["labels"].get(k) == v for k, v in labels.items())
    ]


def wait_firing(stage: Stage, name: str, **labels: str) -> list[Any]:
    found = wait_for(
        lambda: active(stage.prom, name, "firing", **labels),
        f"{name} {labels} to fire",
        PATIENCE,
        every=0.1,
    )
    print(f"{name} {labels}: firing")
    return list(found)


def wait_resolved(stage: Stage, name: str, **labels: str) -> None:
    wait_for(
        lambda: not active(stage.prom, name, **labels),
        f"{name} {labels} to resolve",
        PATIENCE,
        every=0.1,
    )
    print(f"{name} {labels}: resolved")


def wait_fleet_seen_healthy(stage: Stage) -> None:
    """Prometheus' latest samples show every service up, the backend up and one leader."""
    prom, count = stage.prom, len(stage.services)

    def healthy() -> bool:
        return (
            prom.value("count(servicegroup_service_up == 1)") == count
            and prom.value("count(servicegroup_service_up == 0)") is None
            and prom.value("min(servicegroup_backend_up)") == 1
            and prom.value("sum(servicegroup_sweep_leader)") == 1
        )

    wait_for(healthy, "Prometheus to see the fleet healthy", PATIENCE, every=0.1)


def wait_quiet(stage: Stage) -> None:
    """No alert pending or firing: the previous test's breakage is undone."""
    wait_for(lambda: not stage.prom.alerts(), "every alert to resolve", PATIENCE, every=0.1)


def longest_for() -> float:
    """The longest `for:` Prometheus holds (the copy's)."""
    rules = each_rule(fast_rules(RULES.read_text()))
    return max(seconds(rule.get("for", "0s")) for rule in rules)


# -- the rules --------------------------------------------------------------------


def test_rules_file_is_loaded_whole(stage: Stage) -> None:
    """Prometheus holds every alert of the file, with our short `for:`, and evaluates them."""
    loaded = {rule["name"]: rule for rule in stage.prom.rules()}
    assert sorted(loaded) == sorted(alert_names())
    for rule in each_rule(fast_rules(RULES.read_text())):
        assert loaded[rule["alert"]]["duration"] == seconds(rule.get("for", "0s"))
    wait_for(
        # Never evaluated: Go's zero time, 0001-01-01.
        lambda: all(not rule["lastEvaluation"].startswith("0001-") for rule in stage.prom.rules()),
        "every rule to be evaluated",
        PATIENCE,
    )


def test_healthy_fleet_fires_nothing(stage: Stage) -> None:
    """Watched for longer than the longest `for:`, a healthy fleet fires no alert."""
    wait_fleet_seen_healthy(stage)
    watch = longest_for() + 4 * SCRAPE
    fired: list[Any] = []
    deadline = time.monotonic() + watch
    while time.monotonic() < deadline:
        fired += [alert for alert in stage.prom.alerts() if alert["state"] == "firing"]
        time.sleep(SCRAPE / 2)
    assert fired == []
    unhealthy = [rule for rule in stage.prom.rules() if rule["health"] != "ok"]
    assert unhealthy == [], unhealthy
    print(f"watched a healthy fleet for {watch:.2f}s: no alert fired")


def test_service_that_stops_beating(stage: Stage) -> None:
    wait_quiet(stage)
    stage.silence("compute-3")
    try:
        [alert] = wait_firing(stage, "ServicegroupServiceDown", host="compute-3")
        assert alert["labels"]["binary"] == "nova-compute"
        others = [a["labels"]["host"] for a in active(stage.prom, "ServicegroupServiceDown")]
        assert others == ["compute-3"], "only the silent service pages"
    finally:
        stage.resume("compute-3")
    wait_resolved(stage, "ServicegroupServiceDown", host="compute-3")


def test_forced_down_service_does_not_page(stage: Stage) -> None:
    """A service an admin forced down is down on purpose: ServiceDown stays quiet."""
    wait_quiet(stage)
    service = stage.services["conductor-1"]
    stage.sg.set_forced_down(service, True)
    try:
        wait_for(
            lambda: stage.prom.value('servicegroup_service_up{host="conductor-1"}') == 0,
            "Prometheus to see conductor-1 down",
            PATIENCE,
        )
        # As long again as the rule's `for:`: it would be firing by now.
        settle = time.monotonic() + longest_for()
        while time.monotonic() < settle:
            assert not active(stage.prom, "ServicegroupServiceDown")
            time.sleep(SCRAPE / 2)
    finally:
        stage.sg.set_forced_down(service, False)
    wait_for(
        lambda: stage.prom.value('servicegroup_service_up{host="conductor-1"}') == 1,
        "conductor-1 to be up again",
        PATIENCE,
    )


def test_liveness_backend_unreachable(stage: Stage) -> None:
    """memcached killed: the backend pages once, services are unknown, no service pages."""
    wait_quiet(stage)
    stage.memcached.kill()
    try:
        wait_firing(stage, "ServicegroupBackendDown", driver="memcached")
        wait_firing(stage, "ServicegroupServicesUnknown", binary="nova-compute")
        wait_firing(stage, "ServicegroupServicesUnknown", binary="nova-conductor")
        # ServicesUnknown's `for:` is longer than ServiceDown's: had the guard
        # failed, every service would be paging by now.
        assert not active(stage.prom, "ServicegroupServiceDown")
    finally:
        stage.memcached.start()
    wait_resolved(stage, "ServicegroupBackendDown")
    wait_resolved(stage, "ServicegroupServicesUnknown")
    wait_fleet_seen_healthy(stage)


def test_no_sweep_leader(stage: Stage) -> None:
    """The lease held by a holder that never sweeps (a wedged daemon): nobody leads.

    The wedged holder is a row in SQL; the daemon Prometheus scrapes is real
    and, finding the lease taken, stops sweeping and says so in
    servicegroup_sweep_leader. Undone when the wedged holder's lease lapses.
    """
    wait_quiet(stage)
    engine = stage.sg.engine
    where = leases.c.name == lease.SWEEPER

    def hold_lease(for_seconds: float, holder: str) -> None:
        with writing(engine) as conn:
            now = conn.execute(select(server_now())).scalar_one()
            expires = now + timedelta(seconds=for_seconds)
            values: dict[str, Any] = {"expires_at": expires}
            if holder:
                values.update(holder=holder, epoch=leases.c.epoch + 1)
            conn.execute(update(leases).where(where).values(**values))

    hold_lease(3600, "wedged-daemon")
    try:
        wait_firing(stage, "ServicegroupNoSweepLeader")
    finally:
        hold_lease(-1, "")  # the wedged holder's lease lapses
    wait_resolved(stage, "ServicegroupNoSweepLeader")
    assert stage.prom.value("sum(servicegroup_sweep_leader)") == 1


def test_daemon_absent(stage: Stage) -> None:
    """No daemon answers /metrics: the rules that read its series cannot fire, this one does."""
    wait_quiet(stage)
    stage.daemon.stop()
    try:
        wait_firing(stage, "ServicegroupDaemonAbsent")
        assert not active(stage.prom, "ServicegroupNoSweepLeader")
    finally:
        stage.start_daemon()
    wait_resolved(stage, "ServicegroupDaemonAbsent")
    wait_fleet_seen_healthy(stage)


def test_hook_failing(stage: Stage) -> None:
    """The event hook exits non-zero on one event; resolved once no failure is in the window."""
    wait_quiet(stage)
    conductor = stage.services["conductor-1"]
    stage.hook_fails.touch()
    try:
        stage.sg.set_disabled(conductor, True)  # an event for the hook
        wait_firing(stage, "ServicegroupHookFailing")
    finally:
        stage.hook_fails.unlink()
        stage.sg.set_disabled(conductor, False)
    wait_resolved(stage, "ServicegroupHookFailing")


# -- the dashboard ----------------------------------------------------------------


def test_dashboard_queries_return_data(stage: Stage) -> None:
    """Every panel's PromQL, variables at "All", parses and returns data.

    The fleet is made to show everything the panels draw: a service down (it
    held a claim, which the sweeper recovers), a live claim, transitions.
    """
    wait_quiet(stage)
    prom = stage.prom
    victim = stage.services["compute-2"]
    stage.sg.claim(victim, "instance", f"i-{uuid.uuid4().hex[:6]}", "resizing")
    released = prom.value('sum(servicegroup_claim_recoveries_total{outcome="released"})') or 0
    stage.silence("compute-2")
    try:
        wait_for(
            lambda: (
                prom.value('servicegroup_service_up{host="compute-2"}') == 0
                and (
                    prom.value('sum(servicegroup_claim_recoveries_total{outcome="released"})') or 0
                )
                > released
            ),
            "Prometheus to see compute-2 down and its claim released",
            PATIENCE,
        )
        dashboard = dashboard_queries.load()
        empty = []
        for panel in dashboard_queries.panels(dashboard):
            for target in panel["targets"]:
                expr = dashboard_queries.for_prometheus(target["expr"], dashboard, RATE_WINDOW)
                if not prom.query(expr):  # a query that does not parse fails here
                    empty.append(f"{panel['title']} {target['refId']}: {expr}")
        for name, variable in dashboard_queries.variables(dashboard).items():
            if variable["type"] == "query":
                metric, label = dashboard_queries.label_values(variable)
                if not prom.query(f"group by ({label}) ({metric})"):
                    empty.append(f"variable {name}: label_values({metric}, {label})")
        assert empty == [], "queries without data:\n" + "\n".join(empty)
    finally:
        stage.resume("compute-2")
    wait_resolved(stage, "ServicegroupServiceDown")
    wait_fleet_seen_healthy(stage)


# -- last: leaves the hook hung until the module ends ---------------------------------


def beat_forever(stage: Stage, services: list[Service]) -> None:
    """Keep a batch of services up with one heartbeat_many per report_interval."""
    while not stage.stop_beating.wait(stage.sg.report_interval):
        with contextlib.suppress(Exception):
            stage.sg.heartbeat_many(services)


def test_hook_dropping(stage: Stage) -> None:
    """The hook hangs while more events come than its queue holds: events are dropped.

    The events are the registrations of a batch of services (and their
    first up events), kept beating so that no service alert mixes in.
    Resolved once no drop is left in the rule's window; the hook stays hung
    until the module ends (each queued event would start a process).
    """
    wait_quiet(stage)
    stage.hook_hangs.touch()
    batch = [Registration(f"bulk-{i}", "bulk-worker") for i in range(DROPPING_BATCH)]
    services = [service for service, _ in stage.sg.register_many(batch)]
    stage.sg.heartbeat_many(services)
    beater = threading.Thread(target=beat_forever, args=(stage, services), daemon=True)
    beater.start()
    stage.beaters.append(beater)
    wait_firing(stage, "ServicegroupHookDropping")
    wait_resolved(stage, "ServicegroupHookDropping")
    assert not active(stage.prom, "ServicegroupServiceDown")


def test_every_alert_is_covered() -> None:
    """A rule added to the file without a test here that makes it fire fails this test."""
    fired = set(re.findall(r'wait_firing\(stage, "(\w+)"', Path(__file__).read_text()))
    assert sorted(set(alert_names()) - fired) == []
