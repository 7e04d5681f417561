"""server/workers.py: the supervisor of [api] workers, with real forks and sockets."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from servicegroup.server import workers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_every_worker_binds_the_same_port(tmp_path: Path) -> None:
    port = free_port()

    def run(sock: socket.socket) -> int:
        (tmp_path / str(os.getpid())).write_text(str(sock.getsockname()[1]))
        return 0

    assert workers.supervise(3, "127.0.0.1", port, run) == 0
    bound = [p.read_text() for p in tmp_path.iterdir()]
    assert bound == [str(port)] * 3


def test_a_worker_failing_at_start_stops_the_others(tmp_path: Path) -> None:
    def run(sock: socket.socket) -> int:
        if not (tmp_path / "failed").exists():  # the first one (or two) fail at once
            (tmp_path / "failed").write_text("1")
            return 3
        time.sleep(60)  # the healthy ones: stopped by the supervisor's SIGTERM
        return 0

    started = time.monotonic()
    assert workers.supervise(2, "127.0.0.1", free_port(), run) == 3
    assert time.monotonic() - started < 30


def test_a_worker_that_dies_later_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers, "STARTUP_SECONDS", 0.0)
    monkeypatch.setattr(workers, "RESTART_DELAY", 0.0)
    runs = tmp_path / "runs"
    runs.mkdir()

    def run(sock: socket.socket) -> int:
        (runs / str(os.getpid())).write_text("")
        if len(list(runs.iterdir())) == 1:
            return 7  # the first worker dies...
        time.sleep(60)  # ...its replacement serves until stopped
        return 0

    def stop_when_replaced() -> None:
        deadline = time.monotonic() + 30
        while len(list(runs.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_replaced, daemon=True).start()
    assert workers.supervise(1, "127.0.0.1", free_port(), run) == 7
    assert len(list(runs.iterdir())) == 2


def test_sighup_reaches_every_worker_and_stops_none(tmp_path: Path) -> None:
    hups = tmp_path / "hups"
    hups.mkdir()

    def run(sock: socket.socket) -> int:
        # A flag, not a threading.Event: a handler that takes a lock deadlocks
        # when the signal lands while the main thread holds it (Event.wait
        # holds its own between bytecodes). The reloader only counts, too.
        got: list[int] = []
        signal.signal(signal.SIGHUP, lambda sig, _frame: got.append(sig))
        (hups / f"{os.getpid()}.ready").write_text("")
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        if not got:
            return 5
        (hups / f"{os.getpid()}.hup").write_text("")
        time.sleep(60)  # still serving after the SIGHUP, until the SIGTERM
        return 0

    def hup_then_stop() -> None:
        deadline = time.monotonic() + 30
        while len(list(hups.glob("*.ready"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGHUP)
        while len(list(hups.glob("*.hup"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=hup_then_stop, daemon=True).start()
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as serve() leaves it
    try:
        # 0: every worker lived through the SIGHUP (it wrote .hup after it) until the stop.
        assert workers.supervise(2, "127.0.0.1", free_port(), run) == 0
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert len(list(hups.glob("*.hup"))) == 2
