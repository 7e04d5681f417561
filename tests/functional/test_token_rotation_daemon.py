"""Tokens rotated under the real daemon, with requests in flight: nothing dropped, no restart.

Several threads beat and leave (the fast route and a FastAPI route) without
pause while an agent token file is rotated the way doc/operations.md says:
first the new token added next to the old one, then the old one removed.
The daemon sees each file by its watcher (a new file moved into place) or
by SIGHUP (the file rewritten in place, the watcher too slow to matter),
in one process or in two workers behind one port.

Every answer is judged against when the test changed the file and when the
daemon logged that it had swapped the tokens in (once per process):

- the new token, used only once its addition was seen, is always 2xx;
- the old token is 2xx until its removal was written, may be 401 from then
  on, and must be 401 once its removal was seen everywhere;
- nothing else: no transport error, no 5xx, no other status.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.functional.daemon import Daemon, config_text, free_port
from tests.functional.test_daemon import migrated_sqlite

OLD, NEW = "agent-rot-old-61b", "agent-rot-new-d27"
THREADS = 4
DEADLINE = 20.0
# Seen once per process: the reloader logs this after the swap, with the counts.
ADDED = "now 0 read, 2 agent and 0 admin tokens"
REMOVED = "now 0 read, 1 agent and 0 admin tokens"


@dataclass(frozen=True)
class Answer:
    token: str
    sent: float
    done: float
    status: int | str  # the exception's name when no answer came


def replace(path: Path, text: str) -> None:
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text)
    os.replace(fresh, path)  # the rotation doc/operations.md gives: a new file, mv'd over


def wait_logged(daemon: Daemon, line: str, times: int) -> float:
    """When `line` is in the log `times` times (every process swapped); fails at the deadline."""
    deadline = time.monotonic() + DEADLINE
    while daemon.log().count(line) < times:
        assert time.monotonic() < deadline, f"never logged {times}x {line!r}:\n{daemon.log()}"
        time.sleep(0.02)
    return time.monotonic()


class Traffic:
    """THREADS threads beating and leaving one service each, each answer recorded."""

    def __init__(self, url: str, ids: list[str]) -> None:
        self.url = url
        self.ids = ids
        self.answers: list[Answer] = []
        self.use_new = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(THREADS)
        ]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=DEADLINE)

    def count(self, token: str, after: float = 0.0) -> int:
        with self._lock:
            return sum(1 for a in self.answers if a.token == token and a.sent > after)

    def _run(self, index: int) -> None:
        sid = self.ids[index]
        # Half the threads keep one connection (one worker), half open one per request
        # (the kernel spreads those over the workers).
        keep = httpx.Client(base_url=self.url, timeout=10.0) if index % 2 else None
        n = 0
        while not self._stop.is_set():
            token = NEW if self.use_new.is_set() and n % 2 else OLD
            path = f"/v1/services/{sid}/heartbeat" if n % 3 else f"/v1/services/{sid}/leave"
            headers = {"Authorization": f"Bearer {token}"}
            sent = time.monotonic()
            status: int | str
            try:
                if keep is not None:
                    status = keep.post(path, headers=headers).status_code
                else:
                    status = httpx.post(self.url + path, headers=headers, timeout=10.0).status_code
            except httpx.HTTPError as exc:
                status = exc.__class__.__name__
            with self._lock:
                self.answers.append(Answer(token, sent, time.monotonic(), status))
            n += 1
        if keep is not None:
            keep.close()


def start(tmp_path: Path, workers: int, poll: float) -> tuple[Daemon, Path]:
    agents = tmp_path / "agents"
    agents.write_text(f"# agents\n{OLD}\n")
    port = free_port()
    options = {
        "report_interval": 1.0,
        "service_down_time": 10.0,
        "api__workers": workers,
        "api__agent_token_files": str(agents),
        "api__token_file_poll_interval": poll,
    }
    config = tmp_path / "servicegroup.conf"
    config.write_text(config_text(migrated_sqlite(tmp_path / "sg.sqlite"), port, options))
    return Daemon(config, port, tmp_path / "daemon.log").start().wait_ready(), agents


@pytest.mark.parametrize(
    ("trigger", "workers"),
    [("file", 1), ("file", 2), ("sighup", 1), ("sighup", 2)],
)
def test_a_rotated_token_works_at_once_and_no_request_in_flight_fails(
    tmp_path: Path, trigger: str, workers: int
) -> None:
    # With SIGHUP the watcher looks once an hour: only the signal can make the swap.
    daemon, agents = start(tmp_path, workers, 0.02 if trigger == "file" else 3600.0)
    assert daemon.proc is not None
    pid = daemon.proc.pid

    def rotate(text: str) -> float:
        changed = time.monotonic()
        if trigger == "file":
            replace(agents, text)
        else:
            agents.write_text(text)  # in place: same inode; the SIGHUP says when to read
            daemon.signal(signal.SIGHUP)
        return changed

    try:
        with httpx.Client(base_url=daemon.url, timeout=10.0) as http:
            auth = {"Authorization": f"Bearer {OLD}"}
            ids = [
                http.post(
                    "/v1/services", json={"host": f"h{i}", "binary": "rot"}, headers=auth
                ).json()["id"]
                for i in range(THREADS)
            ]
        with Traffic(daemon.url, ids) as traffic:
            wait_until(lambda: traffic.count(OLD) >= 20)
            added = rotate(f"# rollout: both\n{OLD}\n{NEW}\n")
            added_seen = wait_logged(daemon, ADDED, workers)
            traffic.use_new.set()
            wait_until(lambda: traffic.count(NEW, after=added_seen) >= 20)
            removed = rotate(f"# rollout done\n{NEW}\n")
            removed_seen = wait_logged(daemon, REMOVED, workers)
            wait_until(lambda: traffic.count(OLD, after=removed_seen) >= 20)
        # No restart: the very same process, still answering.
        assert daemon.proc.poll() is None and daemon.proc.pid == pid
    finally:
        daemon.stop()

    wrong = []
    for a in traffic.answers:
        ok = isinstance(a.status, int) and 200 <= a.status < 300
        if a.token == NEW:
            good = ok and a.sent >= added_seen
        elif a.done < removed:  # answered before the removal was even written
            good = ok
        elif a.sent > removed_seen:  # sent once every process had swapped
            good = a.status == 401
        else:  # in flight while the processes swapped: either is right
            good = ok or a.status == 401
        if not good:
            wrong.append(a)
    rejected = [a for a in traffic.answers if a.status == 401]
    # Sent before a change of the file and answered after it.
    across = sum(1 for a in traffic.answers for t in (added, removed) if a.sent < t < a.done)
    print(
        f"{trigger}, {workers} worker(s): {len(traffic.answers)} requests, "
        f"{len(rejected)} answered 401 (old token, after its removal), "
        f"{across} in flight when the file changed; "
        f"addition seen {added_seen - added:.3f} s after the change, "
        f"removal {removed_seen - removed:.3f} s"
    )
    assert wrong == [], wrong[:10]
    assert "Traceback" not in daemon.log()
    for token in (OLD, NEW):
        assert token not in daemon.log()


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "traffic did not reach the count in time"
        time.sleep(0.01)
