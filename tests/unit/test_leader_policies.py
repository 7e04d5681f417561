"""leader/policies.py: `[claims] policies` lines, parsed once, looked up most specific first."""

from __future__ import annotations

import pytest

from servicegroup.exceptions import ConfigError
from servicegroup.leader.policies import Policies


@pytest.mark.parametrize(
    "line",
    [
        "compute = release",
        "compute:rebuilding release",
        "compute:rebuilding = explode",
        "compute:rebuilding = handoff",
        "compute:rebuilding = release, hook=log",
        "compute:rebuilding = handoff, hook=nope",
        "compute:rebuilding = release, grace=-1",
        "compute:rebuilding = release, max_duration=0",
        "compute:rebuilding = release, colour=blue",
        "com pute:rebuilding = release",
    ],
)
def test_bad_policy_lines_are_config_errors(line: str) -> None:
    with pytest.raises(ConfigError) as error:
        Policies([line], "release", 5.0, {})
    assert line in str(error.value)


def test_policy_lookup_most_specific_first() -> None:
    policies = Policies(
        [
            "compute:rebuilding = handoff, hook=log, max_duration=300, grace=1.5",
            "compute:* = delete",
            "*:migrating = release, grace=0",
            "*:* = release, max_duration=900",
        ],
        "release",
        5.0,
        {},
    )
    rebuild = policies.lookup("compute", "rebuilding")
    assert (rebuild.action, rebuild.hook, rebuild.max_duration, rebuild.grace) == (
        "handoff",
        "log",
        300.0,
        1.5,
    )
    assert policies.lookup("compute", "spawning").action == "delete"
    assert policies.lookup("compute", "spawning").grace == 5.0
    assert policies.lookup("stack", "migrating").grace == 0.0
    assert policies.lookup("stack", "updating").max_duration == 900.0
    assert policies.shortest_max_duration == 300.0
    assert Policies([], "delete", 2.0, {}).lookup("x", "y").action == "delete"
