"""Which access level a Keystone token's roles give: oslo.policy rules an operator may override.

Under `[api] auth_strategy = keystone` the daemon asks these rules, never a
role name of its own, so a deployment that calls its roles differently
changes a policy file (`[oslo_policy] policy_file`), not the code. Each level
includes the ones below it, as with static tokens: a token passes a route
when the rule of its level or of any higher one passes.

The defaults follow Keystone's own default roles (admin implies member,
member implies reader) and its `service` role for the service users
OpenStack daemons run as; every rule also demands a token scoped to the one
project the daemon accepts (`servicegroup:scope`), so a reader of some other
project reads nothing here. `oslopolicy-sample-generator --namespace
servicegroup` prints them.
"""

from __future__ import annotations

from typing import Any

from oslo_config import cfg
from oslo_policy import policy

from servicegroup.server.auth import Level

SCOPE = "servicegroup:scope"
RULE_OF_LEVEL = {
    Level.READ: "servicegroup:read",
    Level.AGENT: "servicegroup:agent",
    Level.ADMIN: "servicegroup:admin",
}

RULES = [
    policy.RuleDefault(
        SCOPE,
        "project_id:%(project_id)s",
        description="The token is scoped to [keystone_authtoken] accepted_project_id "
        "(the target's project_id). Every level's rule demands it.",
    ),
    policy.RuleDefault(
        RULE_OF_LEVEL[Level.READ],
        f"rule:{SCOPE} and role:reader",
        description="Read /v1 (services, events, claims) and /metrics.",
        scope_types=["project"],
    ),
    policy.RuleDefault(
        RULE_OF_LEVEL[Level.AGENT],
        f"rule:{SCOPE} and role:service",
        description="Register, heartbeat and leave, and take or release claims: what the "
        "agents of the fleet do, as the service users OpenStack daemons run as. Includes "
        "reading.",
        scope_types=["project"],
    ),
    policy.RuleDefault(
        RULE_OF_LEVEL[Level.ADMIN],
        f"rule:{SCOPE} and role:admin",
        description="Everything, including PATCH and DELETE of services and claims.",
        scope_types=["project"],
    ),
]


def list_rules() -> list[policy.RuleDefault]:
    """Entry point for oslopolicy-sample-generator (namespace 'servicegroup')."""
    return list(RULES)


class KeystonePolicy:
    """The rules, with the operator's policy file over the defaults.

    oslo.policy reads the file again when it changes, so a new policy
    applies without a restart; it is asked on every request, cache hit or
    not, for that reason.
    """

    def __init__(self, conf: cfg.ConfigOpts, project_id: str) -> None:
        self._enforcer = policy.Enforcer(conf)
        self._enforcer.register_defaults(RULES)
        self._target = {"project_id": project_id}

    def allows(self, needed: Level, credentials: dict[str, Any]) -> bool:
        """Whether a token with these credentials may do what `needed` guards."""
        return any(
            self._enforcer.enforce(RULE_OF_LEVEL[level], self._target, credentials)
            for level in (Level.READ, Level.AGENT, Level.ADMIN)
            if level >= needed
        )
