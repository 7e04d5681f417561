"""The /metrics collector against a real ServiceGroup on SQLite, and promtool's verdict."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from servicegroup import ServiceGroup
from servicegroup.db import migration, records
from servicegroup.db.engine import make_engine
from servicegroup.exceptions import BackendError
from servicegroup.server import metrics

IN_CI = os.environ.get("CI", "").lower() == "true"
PER_SERVICE = (
    "servicegroup_service_up",
    "servicegroup_service_info",
    "servicegroup_service_disabled",
    "servicegroup_service_forced_down",
    "servicegroup_service_version",
    "servicegroup_service_last_heartbeat_timestamp_seconds",
    "servicegroup_services",
)


@pytest.fixture
def sg(tmp_path: Path) -> Iterator[ServiceGroup]:
    url = f"sqlite:///{tmp_path / 'sg.sqlite'}"
    engine = make_engine(url)
    migration.upgrade(engine)
    engine.dispose()
    group = ServiceGroup.from_options(
        database__connection=url, report_interval=0.1, service_down_time=0.5
    )
    try:
        yield group
    finally:
        group.close()


@pytest.fixture
def fleet(sg: ServiceGroup) -> dict[str, Any]:
    """A beating service, a silent one with null topic/az, a forced-down one, another binary."""
    beating = sg.register("compute-1", "nova-compute", topic="compute", availability_zone="az1")
    silent = sg.register("compute-2", "nova-compute", version=3)
    forced = sg.register('odd "host" \\ é', "nova-compute", topic="compute")
    sched = sg.register("sched-1", "nova-scheduler", topic="scheduler")
    sg.update(forced, forced_down=True, disabled=True, disabled_reason="broken")
    sg.heartbeat(beating)
    return {"beating": beating, "silent": silent, "forced": forced, "sched": sched}


def backend_down(*_args: object, **_kwargs: object) -> None:
    raise BackendError("database", "connection refused")


def scrape(sg: ServiceGroup) -> str:
    return metrics.render(metrics.make_registry(sg)).decode()


def samples(text: str) -> dict[str, list[Any]]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def by_host(family: list[Any]) -> dict[str, float]:
    return {s.labels["host"]: s.value for s in family}


def test_per_service_metrics_match_the_records(sg: ServiceGroup, fleet: dict[str, Any]) -> None:
    got = samples(scrape(sg))
    odd = fleet["forced"].host

    assert by_host(got["servicegroup_service_up"])["compute-2"] == 0.0
    assert by_host(got["servicegroup_service_up"])[odd] == 0.0
    assert by_host(got["servicegroup_service_disabled"]) == {
        "compute-1": 0.0,
        "compute-2": 0.0,
        odd: 1.0,
        "sched-1": 0.0,
    }
    assert by_host(got["servicegroup_service_forced_down"])[odd] == 1.0
    assert by_host(got["servicegroup_service_version"])["compute-2"] == 3.0
    info = {s.labels["host"]: s.labels for s in got["servicegroup_service_info"]}
    assert info["compute-2"] == {
        "binary": "nova-compute",
        "host": "compute-2",
        "topic": "",
        "availability_zone": "",
        "id": fleet["silent"].uuid,
    }
    assert info["compute-1"]["availability_zone"] == "az1"
    assert {s.value for s in got["servicegroup_service_info"]} == {1.0}


def test_last_heartbeat_sample_only_for_services_that_beat(
    sg: ServiceGroup, fleet: dict[str, Any]
) -> None:
    got = samples(scrape(sg))
    beats = by_host(got["servicegroup_service_last_heartbeat_timestamp_seconds"])
    assert set(beats) == {"compute-1"}
    status = sg.get(fleet["beating"])
    assert beats["compute-1"] == pytest.approx(status.last_heartbeat.timestamp())


def test_services_counts_every_state_for_every_binary(
    sg: ServiceGroup, fleet: dict[str, Any]
) -> None:
    got = samples(scrape(sg))
    counts = {
        (s.labels["binary"], s.labels["state"]): s.value for s in got["servicegroup_services"]
    }
    states = {status.service.host: status.state.value for status in sg.get_all()}
    expected_compute_up = float(states["compute-1"] == "up")
    assert set(counts) == {
        (binary, state)
        for binary in ("nova-compute", "nova-scheduler")
        for state in ("up", "down", "unknown")
    }
    assert counts["nova-compute", "up"] + counts["nova-compute", "down"] == 3.0
    assert counts["nova-compute", "up"] == expected_compute_up
    assert counts["nova-scheduler", "down"] == 1.0
    assert counts["nova-scheduler", "unknown"] == 0.0


def test_one_get_all_per_scrape(
    sg: ServiceGroup, fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = []
    real = sg.snapshot

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(sg, "snapshot", counting)
    registry = metrics.make_registry(sg)
    metrics.render(registry)
    metrics.render(registry)
    assert calls == [((), {}), ((), {})]  # unfiltered, once per scrape


def test_empty_fleet_uses_only_our_own_registry(sg: ServiceGroup) -> None:
    got = samples(scrape(sg))
    assert all(name.startswith("servicegroup_") for name in got)  # no process_/python_
    assert got["servicegroup_backend_up"][0].value == 1.0
    assert not any(got.get(name) for name in PER_SERVICE)


@pytest.mark.parametrize("failing", ["driver_read", "sql_query"])
def test_backend_failure_still_scrapes_with_backend_up_zero(
    sg: ServiceGroup, fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    if failing == "driver_read":
        monkeypatch.setattr(sg.driver, "read", backend_down)
    else:
        monkeypatch.setattr(records, "query", backend_down)
    got = samples(scrape(sg))
    assert [(s.labels, s.value) for s in got["servicegroup_backend_up"]] == [
        ({"driver": "db"}, 0.0)
    ]
    if failing == "sql_query":  # no records at all: nothing per service
        assert not set(PER_SERVICE) & set(got)
    else:  # records readable, liveness not: unknown, not down, but forced down stays down
        forced_host = fleet["forced"].host
        assert by_host(got["servicegroup_service_up"]) == {forced_host: 0.0}
        by_state = {
            (s.labels["binary"], s.labels["state"]): s.value
            for s in got["servicegroup_services"]
            if s.value
        }
        assert by_state == {
            ("nova-compute", "unknown"): 2.0,
            ("nova-compute", "down"): 1.0,
            ("nova-scheduler", "unknown"): 1.0,
        }
    assert got["servicegroup_scrape_duration_seconds"][0].value >= 0


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if IN_CI:
            pytest.fail("promtool is not installed (CI=true: this check must run)")
        pytest.skip("promtool is not installed")
    return path


@pytest.mark.parametrize("backend", ["up", "down", "empty"])
def test_promtool_check_metrics_is_silent(
    sg: ServiceGroup, monkeypatch: pytest.MonkeyPatch, backend: str, request: pytest.FixtureRequest
) -> None:
    tool = promtool()
    if backend != "empty":
        request.getfixturevalue("fleet")
    if backend == "down":
        monkeypatch.setattr(sg.driver, "read", backend_down)
    text = scrape(sg)
    # Records are readable even when liveness is not, so info is there unless empty.
    assert ("servicegroup_service_info{" in text) == (backend != "empty")
    assert 'topic=""' in text or backend == "empty"  # a null topic made it into a label
    result = subprocess.run(
        [tool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )
    assert result.returncode == 0, result
    assert result.stdout == b"" and result.stderr == b"", result


def test_sweeper_metrics_pass_promtool(sg: ServiceGroup, fleet: dict[str, Any]) -> None:
    from servicegroup.leader.sweeper import Sweeper

    tool = promtool()
    sg.conf.set_override("hooks", ["/bin/false"], group="events")
    sweeper = Sweeper(sg, sg.conf)
    try:
        sweeper.sweep()  # leads; the beating service goes down -> up
        sweeper.hooks.queues[0].run({"id": 0})  # one failure to count
        text = metrics.render(metrics.make_registry(sg, sweeper)).decode()
    finally:
        sweeper.hooks.close()
    got = samples(text)
    assert got["servicegroup_sweep_leader"][0].value == 1.0
    assert got["servicegroup_sweep_duration_seconds"][0].value > 0
    transitions = {
        (s.labels["binary"], s.labels["to"]): s.value
        for s in got["servicegroup_transitions"]
        if s.name.endswith("_total")
    }
    assert transitions == {("nova-compute", "up"): 1.0}
    failures = [s for s in got["servicegroup_hook_failures"] if s.name.endswith("_total")]
    # The worker may also have run the swept event through the hook by now.
    assert [s.labels for s in failures] == [{"hook": "/bin/false"}]
    assert failures[0].value >= 1.0
    result = subprocess.run(
        [tool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )
    assert result.returncode == 0 and result.stdout == b"" and result.stderr == b"", result


class _Fixed:
    """A collector replaying fixed families: generate_latest and render see the same samples."""

    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Iterator[Any]:
        yield from self.families


def test_render_is_generate_latest_byte_for_byte(sg: ServiceGroup, fleet: dict[str, Any]) -> None:
    """The fast writer and prometheus_client agree, escapes, unicode and empty labels included."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry

    sg.register('quote "q" \\ b', "nova-compute", availability_zone="zone é")
    families = list(metrics.make_registry(sg).collect())
    odd = GaugeMetricFamily("servicegroup_odd", 'doc with \\ and\nnewline "q"', labels=["z", "a"])
    odd.add_metric(["", 'x"\\\n'], 1e10)
    odd.add_metric(["ü", "b"], -0.5)
    count = CounterMetricFamily("servicegroup_things", "A counter.", labels=["k"])
    count.add_metric(["v"], 3)
    families += [odd, count, GaugeMetricFamily("servicegroup_plain", "No labels.", value=2.5)]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    assert metrics.render(registry) == generate_latest(registry)


@pytest.mark.parametrize("per_service", ["all", "not_up", "none"])
def test_metrics_per_service_limits_the_series_but_never_the_counts(
    sg: ServiceGroup, fleet: dict[str, Any], per_service: str
) -> None:
    sg.conf.set_override("metrics_per_service", per_service, group="api")
    got = samples(scrape(sg))
    # compute-1 may have aged out by now (a 0.5 s down time); the others never beat.
    always_down = {"compute-2", fleet["forced"].host, "sched-1"}
    wanted = {"all": always_down, "not_up": always_down, "none": set()}[per_service]
    for family in PER_SERVICE[:-2]:  # every per-service family but the heartbeat times
        hosts = set(by_host(got.get(family, [])))
        assert hosts - {"compute-1"} == wanted, family
        if per_service == "all":
            assert "compute-1" in hosts
    counts = {
        (s.labels["binary"], s.labels["state"]): s.value for s in got["servicegroup_services"]
    }
    assert sum(counts.values()) == 4  # the counts always count every service


def test_a_registry_reads_metrics_per_service_at_each_scrape(
    sg: ServiceGroup, fleet: dict[str, Any]
) -> None:
    """The daemon builds its registries once; the option is read when a scrape runs."""

    def ups(registry: Any) -> list[Any]:
        return samples(metrics.render(registry).decode()).get("servicegroup_service_up", [])

    registry = metrics.make_registry(sg)
    assert len(ups(registry)) == 4
    sg.conf.set_override("metrics_per_service", "none", group="api")
    assert ups(registry) == []
    forced = metrics.make_registry(sg, per_service="all")  # ?per_service= wins over it
    assert len(ups(forced)) == 4
