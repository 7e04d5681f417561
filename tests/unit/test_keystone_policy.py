"""The default policy's role-to-level mapping, and an operator's policy file over it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from servicegroup.conf import make_conf
from servicegroup.server.auth import Level
from servicegroup.server.keystone_policy import RULES, KeystonePolicy, list_rules

FLEET = "fleet-project-id"


def creds(*roles: str, project_id: str = FLEET) -> dict[str, Any]:
    return {"user_id": "u", "project_id": project_id, "roles": list(roles)}


def levels(policy: KeystonePolicy, credentials: dict[str, Any]) -> list[Level]:
    return [
        level
        for level in (Level.READ, Level.AGENT, Level.ADMIN)
        if policy.allows(level, credentials)
    ]


@pytest.fixture
def policy() -> KeystonePolicy:
    return KeystonePolicy(make_conf(), FLEET)


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        (("reader",), [Level.READ]),
        (("member", "reader"), [Level.READ]),
        (("service",), [Level.READ, Level.AGENT]),
        (("admin", "member", "reader"), [Level.READ, Level.AGENT, Level.ADMIN]),
        ((), []),
    ],
)
def test_default_roles_give_their_level_and_the_ones_below(
    policy: KeystonePolicy, roles: tuple[str, ...], expected: list[Level]
) -> None:
    assert levels(policy, creds(*roles)) == expected


def test_another_project_gets_nothing_whatever_its_roles(policy: KeystonePolicy) -> None:
    assert levels(policy, creds("admin", "service", "reader", project_id="other")) == []


def test_a_policy_file_overrides_the_defaults(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text('"servicegroup:agent": "rule:servicegroup:scope and role:member"\n')
    config = tmp_path / "servicegroup.conf"
    config.write_text(f"[oslo_policy]\npolicy_file = {policy_file}\n")
    conf = make_conf(config_files=[str(config)])
    policy = KeystonePolicy(conf, FLEET)
    assert levels(policy, creds("member", "reader")) == [Level.READ, Level.AGENT]
    assert levels(policy, creds("service")) == []  # the default no longer applies


def test_the_sample_generator_lists_every_rule() -> None:
    names = {rule.name for rule in list_rules()}
    assert names == {rule.name for rule in RULES} == {
        "servicegroup:scope", "servicegroup:read", "servicegroup:agent", "servicegroup:admin"
    }  # fmt: skip
