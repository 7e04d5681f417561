"""bench/fleet.py keeps working: a --quick run on SQLite, its figures checked for sense only.

Never a timing assertion (the machine is shared): every window answered, with
no error status; registrations were 201s and made as many rows, restarts
were 200s and made none; the fleet was all up when it was read.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unavailable

ROOT = Path(__file__).resolve().parents[2]
CONNECTIONS = 50  # fleet.py's wrk connections: at most this many requests in flight at the end
QUICK_SERVICES = 3000


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        unavailable("wrk", "the fleet bench's load generator (Debian package wrk)")
    out = tmp_path_factory.mktemp("fleet") / "fleet.json"
    proc = subprocess.run(
        [sys.executable, "bench/fleet.py", "--quick", "--driver", "db-sqlite", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| heartbeats/s closed |" in proc.stdout  # the table was printed
    return json.loads(out.read_text())["targets"]["db-sqlite"]


def wrk_windows(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [report["bare_route"], *report["register"].values(), *report["heartbeat"].values()]


def test_the_daemon_ran_from_this_tree(report: dict[str, Any]) -> None:
    assert Path(report["daemon_imports"]).resolve().is_relative_to(ROOT)


def test_every_window_answered_without_an_error_status(report: dict[str, Any]) -> None:
    for window in wrk_windows(report):
        assert window["requests"] > 0
        assert window["per_s"] > 0
        assert window["non_2xx"] == 0
        assert 0 < window["p50_ms"] <= window["p99_ms"]
        assert window["window"]["daemon_cores"] >= 0


def test_new_registrations_are_201s_each_one_row(report: dict[str, Any]) -> None:
    for name in ("new", "paced"):
        window = report["register"][name]
        created = window["status"].get("201", 0)
        assert window["status"] == {"201": created}
        assert created == window["requests"] > 0
        # wrk counts the answers it saw; those in flight when it stopped made rows too.
        assert created <= window["rows_added"] <= created + CONNECTIONS


def test_restarts_are_200s_and_make_no_row(report: dict[str, Any]) -> None:
    window = report["register"]["restart"]
    assert window["status"] == {"200": window["requests"]}
    assert window["rows_added"] == 0


def test_paced_windows_offer_no_more_than_their_rate(report: dict[str, Any]) -> None:
    for window in (report["register"]["paced"], report["heartbeat"]["paced"]):
        assert window["requests"] <= window["offered_per_s"] * (2 + 1)  # --quick: 2 s windows


def test_the_fleet_is_topped_up_and_read_all_up(report: dict[str, Any]) -> None:
    fleet, reads = report["fleet"], report["reads"]
    assert fleet["registered_http"] > 0
    assert fleet["services"] == max(QUICK_SERVICES, fleet["registered_http"])
    assert fleet["registered_http"] + fleet["inserted_sql"] == fleet["services"]
    assert fleet["settle"]["error"] is None
    assert fleet["beat_each"]["s"] > 0 and fleet["beat_each"]["per_s"] > 0
    assert reads["listed"] == reads["listed_up"] == fleet["services"]
    assert reads["list_mb"] > 0 and reads["metrics_mb"] > reads["metrics_not_up_mb"] > 0
    assert len(reads["list_ms_each"]) == len(reads["metrics_ms_each"]) == 3
    beating = reads["beating"]  # the same lists, while wrk beats the fleet
    assert len(beating["list_ms_each"]) == 3 and all(t > 0 for t in beating["list_ms_each"])
    assert beating["beats"]["requests"] > 0 and beating["beats"]["non_2xx"] == 0


def test_memory_and_idle_cpu_are_reported(report: dict[str, Any]) -> None:
    assert report["rss_mb"] > 0
    assert report["idle_cpu"]["cores"] >= 0
    assert report["idle_cpu"]["window"]["load1_before"] >= 0


def test_detection_saw_every_victim_go_down_and_its_event(report: dict[str, Any]) -> None:
    """Step 8 measured something: each victim read down and had a down event."""
    detection = report["detection"]
    assert len(detection["victims"]) == 5
    for victim in detection["victims"]:
        assert victim["down_s"] is not None and victim["down_s"] > 0
        assert victim["event_s"] is not None and victim["event_s"] > 0
    assert detection["fleet_beats"]["requests"] > 0
    assert detection["fleet_beats"]["non_2xx"] == 0


def test_a_daemon_with_workers_is_measured_as_its_whole_process_tree() -> None:
    """--workers N: the supervisor's CPU and RSS are nothing; its forked workers are the daemon."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import fleet  # bench/ is not a package: its modules import each other by name
    finally:
        sys.path.remove(str(ROOT / "bench"))
    burn = "import time\nwhile time.process_time() < 0.3: pass\nprint('ok', flush=True)\n"
    burn += "time.sleep(60)"
    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert supervisor.stdout is not None and supervisor.stdout.readline() == "ok\n"
        tree = fleet.process_tree(supervisor.pid)
        assert len(tree) == 2 and tree[0] == supervisor.pid
        (worker,) = tree[1:]
        assert fleet.process_cpu(supervisor.pid) >= fleet.process_cpu(worker) >= 0.25  # in ticks
        assert fleet.tree_rss_mb(supervisor.pid) > fleet.bench.rss_mb(worker)
    finally:
        for pid in fleet.process_tree(supervisor.pid)[::-1]:
            subprocess.run(["kill", str(pid)], check=False)
        supervisor.wait(10)
