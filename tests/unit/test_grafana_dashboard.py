"""etc/servicegroup-dashboard.json is a Grafana dashboard whose every panel queries our metrics.

Whether each query parses and returns data is proven against a real
Prometheus (tests/functional/test_prometheus_server.py); this catches the
mistakes that need no server: bad JSON, a panel without a query, a query
naming a metric the daemon does not export, a variable that is not defined.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servicegroup import ServiceGroup
from servicegroup.db import migration
from servicegroup.db.engine import make_engine
from servicegroup.leader.sweeper import Sweeper
from servicegroup.server import metrics
from tests import dashboard_queries

METRIC = re.compile(r"\bservicegroup_\w+")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dashboard_queries.load()


@pytest.fixture
def exported(tmp_path: Path) -> Iterator[set[str]]:
    """The sample names a daemon with a sweeper and one hook exports, read from a real render."""
    url = f"sqlite:///{tmp_path / 'sg.sqlite'}"
    engine = make_engine(url)
    migration.upgrade(engine)
    engine.dispose()
    sg = ServiceGroup.from_options(database__connection=url, events__hooks=["true"])
    sweeper = Sweeper(sg, sg.conf)
    try:
        text = metrics.render(metrics.make_registry(sg, sweeper)).decode()
    finally:
        sweeper.stop()
        sg.close()
    # A counter's TYPE line names it as its samples do, with _total.
    yield {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def test_is_a_dashboard(dashboard: dict[str, Any]) -> None:
    for key in ("title", "uid", "panels", "templating", "schemaVersion"):
        assert key in dashboard, key
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}, panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]


def test_datasource_is_chosen_on_import(dashboard: dict[str, Any]) -> None:
    """No datasource uid of one Grafana baked in: every query goes to ${datasource}."""
    datasource = dashboard_queries.variables(dashboard)["datasource"]
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"
    wanted = {"type": "prometheus", "uid": "${datasource}"}
    for panel in dashboard_queries.panels(dashboard):
        assert panel["datasource"] == wanted, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == wanted, (panel["title"], target["refId"])


def test_every_panel_has_a_query(dashboard: dict[str, Any]) -> None:
    drawn = dashboard_queries.panels(dashboard)
    assert len(drawn) >= 6
    for panel in drawn:
        targets = panel.get("targets", [])
        assert targets, f"{panel['title']}: no target"
        refs = [target["refId"] for target in targets]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in targets:
            assert target["expr"].strip(), (panel["title"], target["refId"])


def test_queries_name_only_exported_metrics(dashboard: dict[str, Any], exported: set[str]) -> None:
    exprs = [
        target["expr"]
        for panel in dashboard_queries.panels(dashboard)
        for target in panel["targets"]
    ]
    for variable in dashboard_queries.variables(dashboard).values():
        if variable["type"] == "query":
            exprs.append(dashboard_queries.label_values(variable)[0])
    named = {name for expr in exprs for name in METRIC.findall(expr)}
    assert named, "no servicegroup metric in any query"
    assert named <= exported, f"not exported by the daemon: {sorted(named - exported)}"


def test_every_variable_has_a_stand_in(dashboard: dict[str, Any]) -> None:
    """The functional test can send each query; a typo'd $variable would not parse there."""
    defined = dashboard_queries.variables(dashboard)
    for panel in dashboard_queries.panels(dashboard):
        for target in panel["targets"]:
            for name in dashboard_queries.used_variables(target["expr"]):
                assert name in defined or name in dashboard_queries.BUILTIN, name
            substituted = dashboard_queries.for_prometheus(target["expr"], dashboard, "1m")
            assert "$" not in substituted, substituted
