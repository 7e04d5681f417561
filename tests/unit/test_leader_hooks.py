"""leader/hooks.py: the one hook runner, and the event hooks' queues around it."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from servicegroup.leader.hooks import EventHooks, HookQueue, HookRunner
from tests.helpers import wait_for

PATIENCE = 10.0


def queue_for(command: str, timeout: float) -> HookQueue:
    return HookQueue(command, HookRunner({command: command}, timeout))


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(f"import sys, json, time\n{body}\n")
    return f"{sys.executable} {path}"


def test_hook_gets_the_event_as_json_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    hook = queue_for(
        script(tmp_path, "h.py", f"open({str(out)!r}, 'w').write(sys.stdin.read())"), 10
    )
    assert hook.run({"id": 7, "state": "down"})
    assert json.loads(out.read_text()) == {"id": 7, "state": "down"}
    hook.close()


def test_failing_and_timed_out_hooks_are_counted(tmp_path: Path) -> None:
    failing = queue_for(script(tmp_path, "f.py", "sys.exit(3)"), 10)
    slow = queue_for(script(tmp_path, "s.py", "time.sleep(30)"), 0.2)
    missing = queue_for("/nonexistent/hook", 10)
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
    runner = EventHooks([slow, fast], timeout=30)
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
    assert not release.exists() and runner.queues[0].runs == 1
    release.touch()
    wait_for(lambda: runner.queues[0].runs == 3, "the slow hook to catch up")
    runner.close()
    for hook in runner.queues:
        hook.join(PATIENCE)
    assert runner.queues[0].failures == 0


def test_full_queue_drops_and_counts(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("servicegroup.leader.hooks.QUEUE_SIZE", 2)
    release = tmp_path / "release"
    hook = queue_for(
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
