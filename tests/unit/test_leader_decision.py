"""leader/decision.py: which transitions a sweep writes, damping, mass-down protection."""

from __future__ import annotations

from datetime import UTC, datetime

from servicegroup.leader.decision import MassDown, cause_of, decide
from servicegroup.service import Service, ServiceStatus, State
from tests.helpers import make_service

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def svc(observed: str | None, uuid: str = "u1", forced: bool = False) -> Service:
    return make_service(
        uuid=uuid,
        host="h",
        binary="b",
        forced_down=forced,
        created_at=NOW,
        observed_state=observed,
    )


def status(observed: str | None, state: State, beat: datetime | None = NOW, **kw) -> ServiceStatus:
    return ServiceStatus(svc(observed, **kw), state, beat)


def run(snapshots, down_after=1, up_after=1):
    """Feed successive snapshots, applying written transitions like SQL would."""
    observed = snapshots[0][0]
    pending: dict = {}
    emitted = []
    for _, state in snapshots:
        transitions, pending, _ = decide(
            [status(observed, state)], pending, down_after=down_after, up_after=up_after
        )
        for t in transitions:
            emitted.append((t.previous, t.state))
            observed = t.state
    return emitted


def test_no_change_no_transition() -> None:
    assert run([("up", State.UP)] * 3) == []


def test_each_change_is_one_transition() -> None:
    seq = [("up", State.UP), (None, State.DOWN), (None, State.DOWN), (None, State.UP)]
    assert run(seq) == [("up", "down"), ("down", "up")]


def test_unknown_and_back() -> None:
    seq = [("up", State.UNKNOWN), (None, State.UP)]
    assert run(seq) == [("up", "unknown"), ("unknown", "up")]


def test_down_damping_needs_consecutive_sweeps() -> None:
    flap = [("up", State.DOWN), (None, State.UP), (None, State.DOWN), (None, State.UP)]
    assert run(flap, down_after=2) == []
    steady = [("up", State.DOWN), (None, State.DOWN), (None, State.DOWN)]
    assert run(steady, down_after=2) == [("up", "down")]
    assert run(steady, down_after=3) == [("up", "down")]
    assert run(steady, down_after=4) == []


def test_up_damping_is_separate_from_down() -> None:
    seq = [("down", State.UP), (None, State.UP), (None, State.DOWN), (None, State.DOWN)]
    assert run(seq, up_after=2, down_after=1) == [("down", "up"), ("up", "down")]


def test_damping_counter_resets_on_a_different_candidate() -> None:
    seq = [("up", State.DOWN), (None, State.UNKNOWN), (None, State.DOWN), (None, State.DOWN)]
    assert run(seq, down_after=2) == [("up", "down")]


def test_never_observed_is_seeded_silently() -> None:
    transitions, _, _ = decide([status(None, State.UP)], {})
    assert [(t.previous, t.state, t.cause) for t in transitions] == [(None, "up", "observed")]


def test_causes() -> None:
    assert cause_of(status("down", State.UP)) == "heartbeat"
    assert cause_of(status("up", State.UNKNOWN, None)) == "backend_unavailable"
    assert cause_of(status("up", State.DOWN)) == "heartbeat_timeout"
    assert cause_of(status("up", State.DOWN, None)) == "leave"
    assert cause_of(status("up", State.DOWN, forced=True)) == "forced_down"


# -- mass-down protection ----------------------------------------------------------

MASS = MassDown(threshold=0.5, min_services=3, hold=1.0)


def fleet(states: list[State], observed: list[str], binary: str = "compute") -> list:
    return [
        ServiceStatus(
            make_service(
                uuid=f"{binary}-{i}",
                host=f"h{i}",
                binary=binary,
                last_seen_up=NOW,
                created_at=NOW,
                updated_at=NOW,
                observed_state=seen,
            ),
            state,
            NOW,
        )
        for i, (state, seen) in enumerate(zip(states, observed, strict=True))
    ]


class Sweeps:
    """Successive decisions, applying written transitions like SQL would."""

    def __init__(self, size: int, down_after: int = 1) -> None:
        self.observed = ["up"] * size
        self.pending: dict = {}
        self.held: dict = {}
        self.down_after = down_after

    def sweep(self, states: list[State], at: float) -> list[tuple[int, str]]:
        decision = decide(
            fleet(states, self.observed),
            self.pending,
            down_after=self.down_after,
            mass=MASS,
            held=self.held,
            now=at,
        )
        self.pending, self.held = decision.pending, decision.held
        written = []
        for t in decision.transitions:
            index = int(t.status.service.uuid.rsplit("-", 1)[1])
            self.observed[index] = t.state
            written.append((index, t.state))
        return written


UP, DOWN = State.UP, State.DOWN


def test_a_real_mass_death_is_reported_once_confirmed() -> None:
    sweeps = Sweeps(4)
    assert sweeps.sweep([DOWN, DOWN, DOWN, UP], at=0.0) == []
    assert sweeps.held == {"compute": 0.0}
    assert sweeps.sweep([DOWN, DOWN, DOWN, UP], at=0.5) == []
    assert sweeps.sweep([DOWN, DOWN, DOWN, UP], at=1.0) == [(0, "down"), (1, "down"), (2, "down")]
    assert sweeps.held == {}
    assert sweeps.sweep([DOWN, DOWN, DOWN, UP], at=1.1) == []


def test_a_blip_is_never_reported() -> None:
    sweeps = Sweeps(4)
    assert sweeps.sweep([DOWN, DOWN, DOWN, DOWN], at=0.0) == []
    assert sweeps.sweep([UP, UP, UP, UP], at=0.2) == []
    assert sweeps.held == {}
    assert sweeps.sweep([UP, UP, UP, UP], at=2.0) == []


def test_the_part_still_down_after_the_hold_is_reported() -> None:
    sweeps = Sweeps(4)
    sweeps.sweep([DOWN, DOWN, DOWN, DOWN], at=0.0)
    assert sweeps.sweep([DOWN, UP, UP, UP], at=0.3) == []
    assert sweeps.sweep([DOWN, UP, UP, UP], at=1.0) == [(0, "down")]


def test_at_or_below_the_threshold_events_flow() -> None:
    sweeps = Sweeps(4)
    assert sweeps.sweep([DOWN, DOWN, UP, UP], at=0.0) == [(0, "down"), (1, "down")]  # 2/4
    assert sweeps.held == {}


def test_small_binaries_are_never_held() -> None:
    sweeps = Sweeps(2)
    assert sweeps.sweep([DOWN, DOWN], at=0.0) == [(0, "down"), (1, "down")]


def test_ups_are_never_held_and_damping_still_applies() -> None:
    sweeps = Sweeps(4, down_after=2)
    assert sweeps.sweep([DOWN, DOWN, DOWN, UP], at=0.0) == []  # damping: first sighting
    assert sweeps.held == {}
    assert sweeps.sweep([DOWN, DOWN, DOWN, UP], at=0.1) == []  # agreed, and now held
    assert sweeps.held == {"compute": 0.1}
    assert sweeps.sweep([DOWN, DOWN, DOWN, UP], at=1.1) == [(0, "down"), (1, "down"), (2, "down")]
    assert sweeps.sweep([UP, UP, UP, UP], at=1.2) == [(0, "up"), (1, "up"), (2, "up")]


def test_other_binaries_are_not_held() -> None:
    statuses = fleet([DOWN] * 3, ["up"] * 3, "a") + fleet([DOWN], ["up"], "b")
    decision = decide(statuses, {}, mass=MASS, now=0.0)
    assert decision.held == {"a": 0.0}
    assert [t.status.service.binary for t in decision.transitions] == ["b"]


def test_mass_down_counts_the_binary_given_when_the_sweep_read_only_some() -> None:
    """An incremental sweep reads 3 dying services of 100: not a mass death."""
    dying = [status("up", State.DOWN, uuid=f"u{i}") for i in range(3)]
    mass = MassDown(threshold=0.5, min_services=3, hold=60.0)
    alone = decide(dying, {}, mass=mass, held={}, now=1.0)
    assert alone.transitions == [] and set(alone.held) == {"b"}  # 3 of 3: held back
    among_many = decide(dying, {}, mass=mass, held={}, now=1.0, sizes={"b": 100})
    assert [t.state for t in among_many.transitions] == ["down"] * 3
    assert among_many.held == {}


def test_a_binary_with_its_own_down_time_is_held_back_that_long() -> None:
    mass = MassDown(threshold=0.5, min_services=3, hold=1.0, by_binary={"compute": 5.0})
    assert (mass.hold_of("compute"), mass.hold_of("conductor")) == (5.0, 1.0)
    observed = ["up"] * 3
    held: dict[str, float] = {}
    for at, written in ((0.0, 0), (1.0, 0), (4.9, 0), (5.0, 3)):
        decision = decide(fleet([DOWN] * 3, observed), {}, mass=mass, held=held, now=at)
        held = decision.held
        assert len(decision.transitions) == written, at
