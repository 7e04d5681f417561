"""etc/servicegroup-dashboard.json read the way Grafana reads it, for the tests.

The unit test checks the JSON's shape; the functional test sends every
panel's PromQL to a real Prometheus. Both need the same walk over the panels
and the same stand-ins for Grafana's variables, hence this one module.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[1] / "etc" / "servicegroup-dashboard.json"

# Grafana's own variables, and what it would put in for them.
BUILTIN = {"__rate_interval", "__interval", "__range"}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
LABEL_VALUES = re.compile(r"^label_values\((\w+),\s*(\w+)\)$")


def load() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that draws something: rows are left out, a collapsed row's panels put in."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            found += panel.get("panels", [])
        else:
            found.append(panel)
    return found


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


def used_variables(expr: str) -> set[str]:
    return {braced or bare for braced, bare in VARIABLE.findall(expr)}


def for_prometheus(expr: str, dashboard: dict[str, Any], window: str) -> str:
    """The PromQL Grafana would send with every variable at "All" and a rate window of `window`.

    A query variable's "All" is its allValue (a regex matching everything);
    Grafana's interval variables all become `window`.
    """
    defined = variables(dashboard)

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in BUILTIN:
            return window
        variable = defined.get(name)
        if variable is None or not variable.get("includeAll"):
            raise ValueError(f"{name}: no stand-in for this variable")
        all_value: str = variable["allValue"]
        return all_value

    return VARIABLE.sub(value, expr)


def label_values(variable: dict[str, Any]) -> tuple[str, str]:
    """(metric, label) of a `label_values(metric, label)` variable query."""
    query = variable["query"]
    text = query["query"] if isinstance(query, dict) else query
    match = LABEL_VALUES.match(text.strip())
    if match is None:
        raise ValueError(f"{variable['name']}: not a label_values(metric, label) query: {text}")
    return match.group(1), match.group(2)
