"""Liveness-backed claims: in-flight work, recovered as soon as its owner dies.

A service claims a resource for an operation ("compute" "i-42" "rebuilding")
and gets a token carrying an epoch. The claim lives as long as its owner is
alive and keeps it; when the owner dies, the sweeping leader revokes it
(epoch + 1) and applies the operation's recovery policy.

Fencing makes this safe against a former owner that is slow rather than
dead: its renew/release fail with ClaimLost, and any write it makes through
`fence(claim)` matches 0 rows once the epoch has moved on. See doc/claims.md.

This module is what a claim's holder imports: the Claim token, the fencing
helpers for its own writes, and token() to rebuild one from its parts.
Making and keeping claims is ServiceGroup's (api.py: claim, renew, release,
...); recovering them is the sweeping leader's (leader/recovery.py).

Usage::

    claim = sg.claim(me, "instance", inst_id, "rebuilding")
    with engine.begin() as conn:   # the database that holds the claims table
        conn.execute(tasks.update().where((tasks.c.id == inst_id) & fence(claim)).values(...))
    sg.release(claim)
"""

from __future__ import annotations

from datetime import UTC, datetime

from servicegroup import validation
from servicegroup.db.claim_rows import HELD, Claim, fence, fence_sql
from servicegroup.exceptions import InvalidInput

__all__ = ["Claim", "as_token", "fence", "fence_sql", "token"]


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


def as_token(value: object) -> Claim:
    """`value` if it is a claim token; else the InvalidInput every front end raises alike."""
    if not isinstance(value, Claim):
        raise InvalidInput("claim", "must be a Claim returned by claim() or renew()")
    return value
