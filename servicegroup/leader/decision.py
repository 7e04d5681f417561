"""What the sweeping leader reports: the pure decision over one sweep's statuses.

`decide()` takes the judged statuses (the state rule in state.py has already
said up, down or unknown) and what was last observed (services.observed_state,
the event stream's view), and says which transitions to write. It damps
flapping (`down_after`, `up_after`) and holds back a binary's mass death
(MassDown). No I/O and no clock of its own: the sweeper passes monotonic
time in, so every rule here is tested with plain values
(tests/unit/test_leader_decision.py).

Usage::

    decision = decide(statuses, pending, down_after=1, up_after=1,
                      mass=MassDown(0.5, 3, 60.0), held=held, now=time.monotonic())
    write(decision.transitions); pending, held = decision.pending, decision.held
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from servicegroup.db.event_log import Draft
from servicegroup.service import ServiceStatus, State


@dataclass(frozen=True, slots=True)
class Transition:
    status: ServiceStatus
    previous: str | None  # None: never observed; recorded silently, not an event
    state: str
    cause: str

    def draft(self) -> Draft:
        svc = self.status.service
        return Draft(svc.uuid, svc.host, svc.binary, self.previous, self.state, self.cause)


# Causes only the sweeping leader writes (cause_of); forced_down and leave are
# also written by admin actions and leave() (db/records.py).
SWEEP_CAUSES = frozenset({"heartbeat", "heartbeat_timeout", "backend_unavailable"})


def cause_of(status: ServiceStatus) -> str:
    """Why a service is in its judged state, in the words events use."""
    if status.state is State.UP:
        return "heartbeat"
    if status.state is State.UNKNOWN:
        return "backend_unavailable"
    if status.service.forced_down:
        return "forced_down"
    if status.last_heartbeat is None:
        # The backend holds no heartbeat at all: leave(), or (zookeeper) the
        # session of a dead process expired and took its node.
        return "leave"
    return "heartbeat_timeout"


@dataclass(frozen=True, slots=True)
class MassDown:
    """Mass-expiry protection: when too much of a binary dies in one sweep, doubt it.

    A whole binary going down at once is far more often the liveness path
    failing (a backend restart, a network blip, the database back after an
    outage with every heartbeat stale) than a fleet dying; a consumer that
    evacuates on those events does real damage. So when more than
    `threshold` of a binary's services (and at least `min_services` of them)
    would go down in ONE sweep, that binary's down events are held back for
    `hold` seconds (service_down_time, or the binary's own in `by_binary`:
    [binaries]). A service still down when the hold ends is confirmed and
    its event written then; one that came back was a blip and is never
    reported.
    """

    threshold: float = 0.5
    min_services: int = 3
    hold: float = 60.0
    by_binary: Mapping[str, float] = field(default_factory=dict)

    def hold_of(self, binary: str) -> float:
        return self.by_binary.get(binary, self.hold)


class Decision(NamedTuple):
    transitions: list[Transition]
    # uuid -> (candidate state, consecutive sweeps seen), for damping.
    pending: dict[str, tuple[str, int]]
    # binary -> when (monotonic) its down events started being held back.
    held: dict[str, float]


def decide(
    statuses: Sequence[ServiceStatus],
    pending: Mapping[str, tuple[str, int]],
    down_after: int = 1,
    up_after: int = 1,
    *,
    mass: MassDown | None = None,
    held: Mapping[str, float] | None = None,
    now: float = 0.0,
    sizes: Mapping[str, int] | None = None,
) -> Decision:
    """The sweeper's one decision: which transitions to emit from this snapshot.

    `pending` maps a uuid to (candidate state, consecutive sweeps seen) for
    changes still being damped; the new map is returned. A change to up needs
    `up_after` agreeing sweeps, to down or unknown `down_after`. With `mass`,
    down transitions of a binary under mass-expiry protection (`held`, at
    monotonic time `now`) are kept back; see MassDown. `sizes` is how many
    services each binary has, when `statuses` are not all of them (an
    incremental sweep reads only what can have changed).
    """
    transitions: list[Transition] = []
    new_pending: dict[str, tuple[str, int]] = {}
    for status in statuses:
        svc = status.service
        current = status.state.value
        observed = svc.observed_state
        if observed is None:
            transitions.append(Transition(status, None, current, "observed"))
            continue
        if current == observed:
            continue
        candidate, seen = pending.get(svc.uuid, (current, 0))
        seen = seen + 1 if candidate == current else 1
        needed = up_after if current == State.UP.value else down_after
        if seen >= needed:
            transitions.append(Transition(status, observed, current, cause_of(status)))
        else:
            new_pending[svc.uuid] = (current, seen)
    new_held = dict(held or {})
    if mass is None:
        return Decision(transitions, new_pending, new_held)
    if sizes is None:
        sizes = Counter(s.service.binary for s in statuses)
    return _protect(sizes, transitions, new_pending, down_after, mass, new_held, now)


def _protect(
    sizes: Mapping[str, int],
    transitions: list[Transition],
    pending: dict[str, tuple[str, int]],
    down_after: int,
    mass: MassDown,
    held: dict[str, float],
    now: float,
) -> Decision:
    downs = Counter(t.status.service.binary for t in transitions if _is_down(t))
    released = set()
    for binary, since in list(held.items()):
        if now - since >= mass.hold_of(binary):
            del held[binary]  # confirmed: what is still down is written now
            released.add(binary)
        elif not downs[binary]:
            del held[binary]  # everyone came back: it was a blip
    for binary, count in downs.items():
        size = sizes.get(binary, 0)
        if (
            binary not in held
            and binary not in released
            and size >= mass.min_services
            and count > mass.threshold * size
        ):
            held[binary] = now
    kept: list[Transition] = []
    for t in transitions:
        if _is_down(t) and t.status.service.binary in held:
            # Damping already agreed: still eligible at the next sweep.
            pending[t.status.service.uuid] = (t.state, down_after)
        else:
            kept.append(t)
    return Decision(kept, pending, held)


def _is_down(t: Transition) -> bool:
    return t.previous is not None and t.state == State.DOWN.value
