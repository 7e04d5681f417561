"""Claims recovery: the sweeping leader's pass over claims whose owner is gone.

A claim lives as long as its owner is alive and keeps it. When the event
stream says the owner went down (or was forced down, or deleted), or the
claim outlives its operation's max_duration while the owner is still up,
this pass revokes it (epoch + 1) and, after a grace period, applies the
operation's policy (leader/policies.py): release it, delete it, or hand it
to a recovery hook (leader/hooks.py) under a newer epoch.

Recovery decides from services.observed_state (the event stream), never from
a raw reading: what damps or holds back a down event (down_after, mass-expiry
protection) holds back recovery too, and `unknown` (backend outage) is not
down, so nothing is recovered while liveness cannot be read.

Usage (the sweeper does this once per sweep, as the leader)::

    recovery = Recovery(engine, conf, holder)
    recovery.run(hold)      # hold: the lease.Hold of this sweep
    recovery.close()
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections import Counter
from datetime import datetime, timedelta
from typing import Any, Protocol

from oslo_config import cfg
from sqlalchemy import Connection, Engine

from servicegroup.backend_errors import sql_errors
from servicegroup.db import claim_rows, event_log
from servicegroup.db.claim_rows import DELETED, RELEASED, Claim
from servicegroup.db.engine import writing
from servicegroup.exceptions import BackendError
from servicegroup.leader.hooks import HookRunner
from servicegroup.leader.policies import Policies, Policy, parse_hooks

LOG = logging.getLogger(__name__)

HOOK_WORKERS = 4


class Leading(Protocol):
    """The lease as recovery needs it: confirmed inside each writing transaction."""

    def confirm(self, conn: Connection) -> bool: ...


class Recovery:
    """The sweeping leader's claims pass: revoke what lost its owner, recover what is due.

    Everything it writes is a compare-and-set on the claim's epoch, in a
    transaction that confirms the sweeper's lease (db/claim_rows.py, leader/lease.py).
    Hook runs happen on worker threads after the takeover committed, so a slow
    hook never delays a sweep or the lease renewal.
    """

    def __init__(self, engine: Engine, conf: cfg.ConfigOpts, holder: str) -> None:
        self.engine = engine
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

    def run(self, leading: Leading) -> int:
        """One pass; the number of claims revoked or recovered (0 unless we lead)."""
        handoffs: list[tuple[Claim, Policy]] = []
        acted = 0
        with sql_errors(), writing(self.engine) as conn:
            if not leading.confirm(conn):
                return 0
            event_log.lock_sequence(conn)
            now = claim_rows.db_now(conn)
            acted += self._revoke(conn, now)
            for claim in claim_rows.due(conn, now):
                policy = self.policies.lookup(claim.resource_type, claim.operation)
                if policy.action == "handoff":
                    busy = now + timedelta(seconds=self.hooks.timeout + self.backoff)
                    started = claim_rows.start_attempt(conn, claim, busy)
                    if started is not None:
                        handoffs.append((started, policy))
                    continue
                state = RELEASED if policy.action == "release" else DELETED
                details = {"policy": policy.action, "outcome": "succeeded"}
                if claim_rows.finish(conn, claim, state, "claim_recovered", details):
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
        for cand in claim_rows.candidates(conn, stale):
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
            done = claim_rows.revoke(conn, cand, reason, retry_at, overdue_before, self.holder)
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
            with sql_errors(), writing(self.engine) as conn:
                event_log.lock_sequence(conn)
                if outcome.result == "succeeded":
                    if not claim_rows.finish(conn, claim, RELEASED, "claim_recovered", details):
                        LOG.warning("claim %s/%s moved on while its hook ran", *claim.key)
                    return
                delay = min(self.backoff_max, self.backoff * 2 ** max(0, claim.attempts - 1))
                retry_at = claim_rows.db_now(conn) + timedelta(seconds=delay)
                details.update(error=outcome.error, retry_in=delay)
                claim_rows.attempt_failed(conn, claim, retry_at, details)
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
