"""Liveness-backed claims: in-flight work, recovered as soon as its owner dies.

A service claims a resource for an operation ("compute" "i-42" "rebuilding")
and gets a token carrying an epoch. The claim lives as long as its owner is
alive and keeps it: when the sweeper's event stream says the owner went down
(or was forced down, or deleted), or the claim outlives its operation's
max_duration while the owner is still up, the sweeping leader revokes it
(epoch + 1) and, after a grace period, applies the operation's policy:
release it, delete it, or hand it to a recovery hook under a newer epoch.

Fencing makes this safe against a former owner that is slow rather than
dead: its renew/release fail with ClaimLost, and any write it makes through
`fence(claim)` matches 0 rows once the epoch has moved on. See doc/claims.md.

Recovery decides from services.observed_state (the event stream), never from
a raw reading: what damps or holds back a down event (down_after, mass-expiry
protection) holds back recovery too, and `unknown` (backend outage) is not
down, so nothing is recovered while liveness cannot be read.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import logging
import shlex
import subprocess
import threading
import uuid as uuid_mod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from oslo_config import cfg
from sqlalchemy import Connection

from servicegroup import validation
from servicegroup.db import claims as db_claims
from servicegroup.db import events as db_events
from servicegroup.db import records
from servicegroup.db.claims import DELETED, HELD, RELEASED, Claim, fence, fence_sql
from servicegroup.db.engine import writing
from servicegroup.exceptions import BackendError, ConfigError, InvalidInput
from servicegroup.service import Service

if TYPE_CHECKING:
    from servicegroup.api import ServiceGroup

LOG = logging.getLogger(__name__)

ACTIONS = ("release", "delete", "handoff")
ENTRY_POINTS = "servicegroup.recovery"
HOOK_WORKERS = 4
_UNSET: Any = object()

__all__ = ["Claim", "ClaimsMixin", "Policies", "Policy", "Recovery", "fence", "fence_sql"]


def token(resource_type: str, resource_id: str, owner: str, incarnation: str, epoch: int) -> Claim:
    """A claim token rebuilt from its parts (HTTP and CLI callers send only these)."""
    epoch0 = datetime.fromtimestamp(0, UTC)
    return Claim(
        validation.kind("resource_type", resource_type),
        validation.resource_id(resource_id),
        "",
        validation.service_id(owner, "service_id"),
        validation.incarnation(incarnation),
        validation.epoch(epoch),
        HELD,
        epoch0,
        epoch0,
    )


class ClaimsMixin:
    """The claims half of ServiceGroup's public API (api.py mixes it in)."""

    engine: Any

    @functools.cached_property
    def incarnation(self) -> str:
        """This process start's identity: a ServiceGroup is never its former self."""
        return str(uuid_mod.uuid4())

    def claim(
        self,
        service: Service | str,
        resource_type: str,
        resource_id: str,
        operation: str,
        details: dict[str, Any] | None = None,
        *,
        incarnation: str | None = None,
    ) -> Claim:
        """Claim a resource for `service`; ClaimHeld (naming the holder) if it is taken.

        `incarnation` defaults to this ServiceGroup's; the HTTP layer passes
        the calling process's own.
        """
        owner = service.uuid if isinstance(service, Service) else service
        owner = validation.service_id(owner, "service_id")
        resource_type = validation.kind("resource_type", resource_type)
        resource_id = validation.resource_id(resource_id)
        operation = validation.kind("operation", operation)
        encoded = validation.details(details)
        incarnation = self._incarnation(incarnation)
        records.get(self.engine, owner)  # NotFound for an unknown or deleted owner
        with records.sql_errors():
            return db_claims.acquire(
                self.engine, resource_type, resource_id, operation, owner, incarnation, encoded
            )

    def renew(
        self,
        claim: Claim,
        details: dict[str, Any] | None = _UNSET,
        *,
        incarnation: str | None = None,
    ) -> Claim:
        """Say the work is progressing (and optionally replace details); ClaimLost if stale.

        Only the incarnation that made the claim may renew it (`incarnation`
        defaults to this ServiceGroup's): a restarted process cannot pick up
        its former self's tokens from lost_claims().
        """
        self._check_token(claim, incarnation)
        encoded = None if details is _UNSET else validation.details(details)
        with records.sql_errors():
            return db_claims.renew(self.engine, claim, encoded, details is not _UNSET)

    def release(self, claim: Claim, *, incarnation: str | None = None) -> Claim:
        """Free the resource: the work is done. ClaimLost if the token is stale."""
        self._check_token(claim, incarnation)
        with records.sql_errors():
            return db_claims.release(self.engine, claim)

    def is_current(self, claim: Claim) -> bool:
        """Whether the token still holds. Racy by nature: fence writes with fence(claim)."""
        if not isinstance(claim, Claim):
            raise InvalidInput("claim", "must be a Claim returned by claim() or renew()")
        with records.sql_errors():
            return db_claims.is_current(self.engine, claim)

    def get_claim(self, resource_type: str, resource_id: str) -> Claim:
        resource_type = validation.kind("resource_type", resource_type)
        resource_id = validation.resource_id(resource_id)
        with records.sql_errors():
            return db_claims.get(self.engine, resource_type, resource_id)

    def list_claims(
        self,
        owner: Service | str | None = None,
        resource_type: str | None = None,
        state: str | None = None,
    ) -> list[Claim]:
        if owner is not None:
            owner = owner.uuid if isinstance(owner, Service) else owner
            owner = validation.service_id(owner, "owner")
        if resource_type is not None:
            resource_type = validation.kind("resource_type", resource_type)
        state = validation.claim_state(state)
        with records.sql_errors():
            return db_claims.find(self.engine, owner, resource_type, state)

    def force_release(self, resource_type: str, resource_id: str, reason: str) -> Claim:
        """Operator override: free a live claim whoever holds it, bump the epoch, audit it."""
        resource_type = validation.kind("resource_type", resource_type)
        resource_id = validation.resource_id(resource_id)
        reason = validation.reason(reason, "reason") or ""
        with records.sql_errors():
            return db_claims.force_release(self.engine, resource_type, resource_id, reason)

    def lost_claims(self, service: Service | str, incarnation: str | None = None) -> list[Claim]:
        """Claims this service held in a previous incarnation and did not release itself."""
        owner = service.uuid if isinstance(service, Service) else service
        owner = validation.service_id(owner, "service_id")
        incarnation = self._incarnation(incarnation)
        with records.sql_errors():
            return db_claims.lost_of(self.engine, owner, incarnation)

    def _incarnation(self, given: str | None) -> str:
        """This process's own incarnation unless another is named; "" is not "none given"."""
        return validation.incarnation(self.incarnation if given is None else given)

    def _check_token(self, claim: Any, incarnation: str | None) -> None:
        if not isinstance(claim, Claim):
            raise InvalidInput("claim", "must be a Claim returned by claim() or renew()")
        mine = self._incarnation(incarnation)
        if claim.incarnation != mine:
            with records.sql_errors():
                current = db_claims.find_one(self.engine, *claim.key)
            raise db_claims.lost(claim, current, "it was made by another incarnation")


# -- policies --------------------------------------------------------------------


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
    if "hook" in values and values["hook"] not in hooks and not _entry_point(values["hook"]):
        raise ConfigError(
            f"{where}: no hook {values['hook']!r} in [claims] recovery_hooks and no "
            f"{ENTRY_POINTS} entry point of that name"
        )
    key = (rtype.strip(), operation.strip())
    return key, Policy(action, pattern=f"{key[0]}:{key[1]}", **values)


def parse_hooks(lines: list[str]) -> dict[str, str]:
    """`[claims] recovery_hooks` lines, ``NAME = COMMAND``."""
    hooks = {}
    for line in lines:
        name, eq, command = (s.strip() for s in line.partition("="))
        if not eq or not name or not shlex.split(command):
            raise ConfigError(f"[claims] recovery_hooks {line!r}: expected NAME = COMMAND")
        hooks[name] = command
    return hooks


def _entry_point(name: str) -> Callable[[dict[str, Any]], object] | None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINTS, name=name):
        return ep.load()
    return None


def log_hook(claim: dict[str, Any]) -> None:
    """The built-in `log` hook: record the hand-off in the log, and succeed.

    For claims whose work needs nothing undone, where someone should still see
    that it was interrupted.
    """
    LOG.warning(
        "recovered %s %s (%s by service %s, epoch %s)",
        claim["resource_type"],
        claim["resource_id"],
        claim["operation"],
        claim["owner"],
        claim["epoch"],
    )


# -- hooks -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    result: str  # succeeded | failed | timed_out
    error: str | None = None


class HookRunner:
    """Runs a named hook with the claim as JSON: a command (stdin) or a Python callable."""

    def __init__(self, commands: dict[str, str], timeout: float) -> None:
        self.commands = commands
        self.timeout = timeout

    def run(self, name: str, payload: dict[str, Any]) -> Outcome:
        if name in self.commands:
            return self._command(shlex.split(self.commands[name]), payload)
        func = _entry_point(name)
        if func is None:
            return Outcome("failed", f"no hook {name!r}")
        return self._callable(func, payload)

    def _command(self, argv: list[str], payload: dict[str, Any]) -> Outcome:
        try:
            result = subprocess.run(
                argv,
                input=json.dumps(payload).encode(),
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Outcome("timed_out", f"killed after {self.timeout:g}s")
        except OSError as exc:
            return Outcome("failed", str(exc))
        if result.returncode != 0:
            tail = result.stderr.decode(errors="replace").strip().splitlines()[-1:]
            return Outcome("failed", f"exit {result.returncode} {' '.join(tail)}".strip())
        return Outcome("succeeded")

    def _callable(
        self, func: Callable[[dict[str, Any]], object], payload: dict[str, Any]
    ) -> Outcome:
        """On its own thread, so a timeout can be told; a timed-out call runs on, but
        under an epoch the next attempt makes stale."""
        done: dict[str, BaseException | None] = {}

        def call() -> None:
            try:
                func(payload)
                done["error"] = None
            except BaseException as exc:
                done["error"] = exc

        thread = threading.Thread(target=call, name="recovery hook", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if "error" not in done:
            return Outcome("timed_out", f"still running after {self.timeout:g}s")
        error = done["error"]
        if error is not None:
            return Outcome("failed", f"{type(error).__name__}: {error}")
        return Outcome("succeeded")


# -- recovery --------------------------------------------------------------------


class Recovery:
    """The sweeping leader's claims pass: revoke what lost its owner, recover what is due.

    Everything it writes is a compare-and-set on the claim's epoch, in a
    transaction fenced by the sweeper's lease (db/claims.py, db/events.py).
    Hook runs happen on worker threads after the takeover committed, so a slow
    hook never delays a sweep or the lease renewal.
    """

    def __init__(self, sg: ServiceGroup, conf: cfg.ConfigOpts, holder: str) -> None:
        self.sg = sg
        self.holder = holder
        self.policies = Policies.from_conf(conf)
        self.hooks = HookRunner(
            parse_hooks(list(conf.claims.recovery_hooks)), conf.claims.hook_timeout
        )
        self.backoff: float = conf.claims.retry_backoff
        self.backoff_max: float = conf.claims.retry_backoff_max
        self.outcomes: Counter[str] = Counter()
        self._pool = concurrent.futures.ThreadPoolExecutor(HOOK_WORKERS, "recovery")
        self._closed = False

    def close(self) -> None:
        """Stop taking work; hook runs in flight finish on their own (their epoch fences them)."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)

    def run(self, fence_lease: Callable[[Connection], bool]) -> int:
        """One pass; the number of claims revoked or recovered (0 unless we lead)."""
        handoffs: list[tuple[Claim, Policy]] = []
        acted = 0
        with records.sql_errors(), writing(self.sg.engine) as conn:
            if not fence_lease(conn):
                return 0
            db_events.lock_sequence(conn)
            now = db_claims.db_now(conn)
            acted += self._revoke(conn, now)
            for claim in db_claims.due(conn, now):
                policy = self.policies.lookup(claim.resource_type, claim.operation)
                if policy.action == "handoff":
                    busy = now + timedelta(seconds=self.hooks.timeout + self.backoff)
                    started = db_claims.start_attempt(conn, claim, busy)
                    if started is not None:
                        handoffs.append((started, policy))
                    continue
                state = RELEASED if policy.action == "release" else DELETED
                details = {"policy": policy.action, "outcome": "succeeded"}
                if db_claims.finish(conn, claim, state, "claim_recovered", details):
                    self.outcomes["released" if state == RELEASED else "deleted"] += 1
                    acted += 1
                    LOG.info(
                        "claim %s/%s %s after %s",
                        claim.resource_type,
                        claim.resource_id,
                        state,
                        claim.reason,
                    )
        for claim, policy in handoffs:
            if not self._closed:
                self._pool.submit(self._hand_off, claim, policy)
        return acted + len(handoffs)

    def _revoke(self, conn: Connection, now: datetime) -> int:
        shortest = self.policies.shortest_max_duration
        stale = None if shortest is None else now - timedelta(seconds=shortest)
        revoked = 0
        for cand in db_claims.candidates(conn, stale):
            claim = cand.claim
            policy = self.policies.lookup(claim.resource_type, claim.operation)
            overdue_before = None
            if cand.owner_deleted:
                reason, grace = "owner_deleted", 0.0
            elif (
                cand.owner_state == "down"
                and cand.owner_observed_at is not None
                and cand.owner_observed_at >= cand.claimed_at_raw
            ):
                forced = cand.owner_forced_down
                reason, grace = ("forced_down", 0.0) if forced else ("owner_down", policy.grace)
            elif (
                cand.owner_state in ("up", "down")
                and policy.max_duration is not None
                and cand.updated_at_raw < now - timedelta(seconds=policy.max_duration)
            ):
                reason, grace = "max_duration", policy.grace
                overdue_before = now - timedelta(seconds=policy.max_duration)
            else:
                continue  # unknown is not down; or not overdue for its own operation
            retry_at = now + timedelta(seconds=grace)
            done = db_claims.revoke(conn, cand, reason, retry_at, overdue_before, self.holder)
            if done is not None:
                revoked += 1
                self.outcomes["revoked"] += 1
                LOG.warning(
                    "claim %s/%s revoked from %s on %s (%s), epoch %d -> %d; %s in %.3gs",
                    claim.resource_type,
                    claim.resource_id,
                    claim.owner_binary,
                    claim.owner_host,
                    reason,
                    claim.epoch,
                    done.epoch,
                    policy.action,
                    grace,
                )
        return revoked

    def _hand_off(self, claim: Claim, policy: Policy) -> None:
        assert policy.hook is not None
        payload = {**claim.as_dict(), "recovered_by": self.holder}
        outcome = self.hooks.run(policy.hook, payload)
        self.outcomes[outcome.result] += 1
        details: dict[str, Any] = {
            "policy": "handoff",
            "hook": policy.hook,
            "attempt": claim.attempts,
            "outcome": outcome.result,
        }
        try:
            with records.sql_errors(), writing(self.sg.engine) as conn:
                db_events.lock_sequence(conn)
                if outcome.result == "succeeded":
                    if not db_claims.finish(conn, claim, RELEASED, "claim_recovered", details):
                        LOG.warning("claim %s/%s moved on while its hook ran", *claim.key)
                    return
                delay = min(self.backoff_max, self.backoff * 2 ** max(0, claim.attempts - 1))
                retry_at = db_claims.db_now(conn) + timedelta(seconds=delay)
                details.update(error=outcome.error, retry_in=delay)
                db_claims.attempt_failed(conn, claim, retry_at, details)
            LOG.warning(
                "recovery hook %r %s on %s/%s (attempt %d): %s; retrying in %.3gs",
                policy.hook,
                outcome.result,
                claim.resource_type,
                claim.resource_id,
                claim.attempts,
                outcome.error,
                delay,
            )
        except BackendError as exc:
            # The claim stays in recovery; its busy deadline passes and a sweep retries.
            LOG.warning("cannot record recovery of %s/%s: %s", *claim.key, exc)
        except Exception:
            LOG.exception("recording recovery of %s/%s failed", *claim.key)
