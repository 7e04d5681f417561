"""Claim recovery policies: what the leader does with a claim whose owner is gone.

`[claims] policies` lines, parsed once at start-up into a lookup; a bad line
is a ConfigError naming the line and the rule it breaks, so a daemon never
starts with a policy it cannot apply. Pure: no I/O but the entry-point
lookup that checks a named hook exists.

Usage::

    policies = Policies(["compute:rebuild = handoff, hook=log, max_duration=600"],
                        default="release", grace=5.0, hooks={})
    policies.lookup("compute", "rebuild").action   # "handoff"
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from oslo_config import cfg

from servicegroup import validation
from servicegroup.exceptions import ConfigError, InvalidInput
from servicegroup.leader.hooks import ENTRY_POINTS, entry_point

ACTIONS = ("release", "delete", "handoff")


@dataclass(frozen=True, slots=True)
class Policy:
    """What recovery does with one (resource_type, operation)'s claims."""

    action: str  # release | delete | handoff
    grace: float
    max_duration: float | None = None
    hook: str | None = None
    pattern: str = "*:*"


class Policies:
    """`[claims] policies` lines, most specific match first.

    A line reads ``TYPE:OPERATION = ACTION[, max_duration=S][, grace=S][, hook=NAME]``;
    TYPE and OPERATION may be ``*``. Lookup order: type:operation, type:*,
    *:operation, *:*, then `default_policy`.
    """

    def __init__(self, lines: list[str], default: str, grace: float, hooks: dict[str, str]) -> None:
        if default not in ("release", "delete"):
            raise ConfigError(f"[claims] default_policy {default!r}: must be release or delete")
        self.default = Policy(default, grace)
        self.rules: dict[tuple[str, str], Policy] = {}
        for line in lines:
            pattern, policy = _parse(line, grace, hooks)
            self.rules[pattern] = policy

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> Policies:
        return cls(
            list(conf.claims.policies),
            conf.claims.default_policy,
            conf.claims.grace,
            parse_hooks(list(conf.claims.recovery_hooks)),
        )

    def lookup(self, resource_type: str, operation: str) -> Policy:
        for key in (
            (resource_type, operation),
            (resource_type, "*"),
            ("*", operation),
            ("*", "*"),
        ):
            if key in self.rules:
                return self.rules[key]
        return self.default

    @property
    def shortest_max_duration(self) -> float | None:
        durations = [p.max_duration for p in self.rules.values() if p.max_duration is not None]
        return min(durations) if durations else None


def _parse(
    line: str, default_grace: float, hooks: dict[str, str]
) -> tuple[tuple[str, str], Policy]:
    where = f"[claims] policies {line!r}"
    pattern, sep, spec = line.partition("=")
    rtype, colon, operation = pattern.strip().partition(":")
    if not sep or not colon:
        raise ConfigError(f"{where}: expected TYPE:OPERATION = ACTION[, key=value...]")
    for field, value in (("TYPE", rtype.strip()), ("OPERATION", operation.strip())):
        if value != "*":
            try:
                validation.kind(field, value)
            except InvalidInput as exc:
                raise ConfigError(f"{where}: {exc}") from None
    action, *options = [part.strip() for part in spec.split(",")]
    if action not in ACTIONS:
        raise ConfigError(f"{where}: action must be one of {', '.join(ACTIONS)}")
    values: dict[str, Any] = {"grace": default_grace}
    for option in options:
        key, eq, value = (s.strip() for s in option.partition("="))
        if not eq or key not in ("max_duration", "grace", "hook"):
            raise ConfigError(f"{where}: unknown option {option!r} (max_duration, grace, hook)")
        if key == "hook":
            values["hook"] = value
            continue
        try:
            seconds = float(value)
        except ValueError:
            raise ConfigError(f"{where}: {key} must be a number of seconds") from None
        if not 0 <= seconds < float("inf") or (key == "max_duration" and seconds == 0):
            raise ConfigError(f"{where}: {key} must be a positive number of seconds")
        values[key] = seconds
    if (action == "handoff") != ("hook" in values):
        raise ConfigError(f"{where}: hook=NAME goes with handoff, and handoff needs one")
    if "hook" in values and values["hook"] not in hooks and not entry_point(values["hook"]):
        raise ConfigError(
            f"{where}: no hook {values['hook']!r} in [claims] recovery_hooks and no "
            f"{ENTRY_POINTS} entry point of that name"
        )
    rule = (rtype.strip(), operation.strip())
    return rule, Policy(action, pattern=f"{rule[0]}:{rule[1]}", **values)


def parse_hooks(lines: list[str]) -> dict[str, str]:
    """`[claims] recovery_hooks` lines, ``NAME = COMMAND``."""
    hooks = {}
    for line in lines:
        name, eq, command = (s.strip() for s in line.partition("="))
        if not eq or not name or not shlex.split(command):
            raise ConfigError(f"[claims] recovery_hooks {line!r}: expected NAME = COMMAND")
        hooks[name] = command
    return hooks
