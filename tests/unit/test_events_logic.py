"""The sweeper's decision (a pure function over snapshots) and the hook runner."""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from servicegroup.api import seconds_to_expiry
from servicegroup.events import Hook, HookRunner, cause_of, decide, next_sweep
from servicegroup.service import Service, ServiceStatus, Snapshot, State
from tests.helpers import make_service, wait_for

NOW = datetime(2026, 1, 1, tzinfo=UTC)
PATIENCE = 10.0


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


# -- hooks -----------------------------------------------------------------------


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(f"import sys, json, time\n{body}\n")
    return f"{sys.executable} {path}"


def test_hook_gets_the_event_as_json_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    hook = Hook(script(tmp_path, "h.py", f"open({str(out)!r}, 'w').write(sys.stdin.read())"), 10)
    assert hook.run({"id": 7, "state": "down"})
    assert json.loads(out.read_text()) == {"id": 7, "state": "down"}
    hook.close()


def test_failing_and_timed_out_hooks_are_counted(tmp_path: Path) -> None:
    failing = Hook(script(tmp_path, "f.py", "sys.exit(3)"), 10)
    slow = Hook(script(tmp_path, "s.py", "time.sleep(30)"), 0.2)
    missing = Hook("/nonexistent/hook", 10)
    for hook in (failing, slow, missing):
        assert not hook.run({"id": 1})
        assert hook.failures == 1
        hook.close()


def test_slow_hook_delays_neither_the_caller_nor_other_hooks(tmp_path: Path) -> None:
    release = tmp_path / "release"
    out = tmp_path / "fast.log"
    slow = script(
        tmp_path,
        "slow.py",
        f"while not __import__('os').path.exists({str(release)!r}): time.sleep(0.01)",
    )
    fast = script(tmp_path, "fast.py", f"open({str(out)!r}, 'a').write(sys.stdin.read() + '\\n')")
    runner = HookRunner([slow, fast], timeout=30)
    submitted = threading.Event()

    def submit() -> None:
        for i in range(3):
            runner.submit({"id": i})
        submitted.set()

    threading.Thread(target=submit).start()
    # The slow hook is still blocked on its first event, yet all were handed
    # over and the fast hook ran all three.
    wait_for(submitted.is_set, "submit() to return")
    wait_for(lambda: out.exists() and len(out.read_text().splitlines()) == 3, "the fast hook")
    assert not release.exists() and runner.hooks[0].runs == 1
    release.touch()
    wait_for(lambda: runner.hooks[0].runs == 3, "the slow hook to catch up")
    runner.close()
    for hook in runner.hooks:
        hook.join(PATIENCE)
    assert runner.hooks[0].failures == 0


def test_full_queue_drops_and_counts(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("servicegroup.events.HOOK_QUEUE_SIZE", 2)
    release = tmp_path / "release"
    hook = Hook(
        script(
            tmp_path,
            "b.py",
            f"while not __import__('os').path.exists({str(release)!r}): time.sleep(0.01)",
        ),
        30,
    )
    hook.submit({"id": 0})
    wait_for(lambda: hook.runs == 1, "the first run to start")
    for i in range(1, 5):
        hook.submit({"id": i})
    assert hook.dropped == 2
    release.touch()
    hook.close()
    hook.join(PATIENCE)


# -- when the sweeper wakes ------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_at", "wake"),
    [
        (None, 101.0),  # nothing to expire: one interval
        (105.0, 101.0),  # expires after the next sweep anyway
        (100.5, 100.51),  # expires sooner: just after it is due
        (100.1, 100.25),  # but never sooner than a quarter interval
        (99.0, 100.25),  # an expiry already past (an early guess): the floor
    ],
)
def test_next_sweep(expires_at: float | None, wake: float) -> None:
    assert next_sweep(100.0, 1.0, expires_at) == pytest.approx(wake)


@pytest.mark.parametrize(
    ("took", "expires_at", "wake"),
    [
        (0.01, None, 101.0),  # within budget: the interval
        (0.2, None, 104.0),  # 0.2 s at a 5% budget: every 4 s
        (2.0, None, 130.0),  # but never past down_time / 2
        (0.2, 102.0, 102.01),  # a death due sooner still wakes it
    ],
)
def test_long_sweeps_are_spaced_out_within_the_budget(
    took: float, expires_at: float | None, wake: float
) -> None:
    got = next_sweep(100.0, 1.0, expires_at, took=took, budget=0.05, down_time=60.0)
    assert got == pytest.approx(wake)


def test_seconds_to_expiry_is_the_first_up_heartbeat_plus_the_down_time() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)

    def status(state: State, seconds_ago: float | None) -> ServiceStatus:
        beat = None if seconds_ago is None else now - timedelta(seconds=seconds_ago)
        return ServiceStatus(make_service(), state, beat)

    statuses = [
        status(State.UP, 3.0),
        status(State.UP, 1.0),
        status(State.DOWN, 30.0),  # already down: no expiry to wait for
        status(State.UNKNOWN, 9.5),
    ]
    assert seconds_to_expiry(Snapshot(statuses, True, read_at=now), 10.0) == 7.0
    assert seconds_to_expiry(Snapshot(statuses[2:], True, read_at=now), 10.0) is None
    assert seconds_to_expiry(Snapshot(statuses, False, read_at=None), 10.0) is None
