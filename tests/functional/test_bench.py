"""The benchmark harness keeps working: a --quick run, checked for correctness only.

Never a timing assertion (the machine is shared); what is asserted is that
every way of asking who is up agrees, that a db heartbeat is one statement,
and that the JSON holds every scenario the docs quote.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import empty_tables, unavailable
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("db-sqlite", "memcached")


def run_bench(script: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, f"bench/{script}", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if shutil.which("wrk") is None:
        unavailable("wrk", "the daemon scenario's load generator (Debian package wrk)")
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    argv = ["--quick", "--driver", ",".join(TARGETS), "--services", "200", "--json", str(out)]
    proc = run_bench("run.py", argv)
    if "skipped" in proc.stderr and "memcached" in proc.stderr:
        unavailable("memcached", proc.stderr[-500:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bulk liveness" in proc.stdout  # the table was printed
    return json.loads(out.read_text())


def test_machine_is_reported(report: dict) -> None:
    machine = report["machine"]
    assert machine["cores"] >= 1
    assert machine["memory_mb"] > 0
    assert len(machine["loadavg"]) == 3
    assert len(report["loadavg_end"]) == 3


@pytest.mark.parametrize("target", TARGETS)
def test_every_scenario_is_there(report: dict, target: str) -> None:
    result = report["targets"][target]
    assert "error" not in result, result.get("error")
    assert set(result) >= {"bulk", "heartbeat", "daemon", "detection"}
    assert list(result["bulk"]) == ["200"]


@pytest.mark.parametrize("target", TARGETS)
def test_nova_loop_raw_floor_and_get_all_agree_on_who_is_up(report: dict, target: str) -> None:
    bulk = report["targets"][target]["bulk"]["200"]
    assert bulk["agree"] == {
        "get_all": True,
        "get_all_changed": True,
        "nova_sample": True,
        "raw": True,
    }
    assert bulk["up"] == 180  # every tenth service never beats
    for key in (
        "get_all_ms",
        "get_all_changed_ms",
        "raw_ms",
        "nova_extrapolated_ms",
        "ratio_vs_raw",
    ):
        assert bulk[key] > 0


def test_a_db_heartbeat_is_one_statement(report: dict) -> None:
    sql = report["targets"]["db-sqlite"]["heartbeat"]["sql_per_heartbeat"]
    assert sql == {"statements": 1, "begins": 0, "pings": 0, "commits": 1, "rollbacks": 0}


def _bench_module():
    spec = importlib.util.spec_from_file_location("sg_bench_run", ROOT / "bench" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_sql_counter_counts_every_path_on_every_dialect(sql_url, make_group) -> None:
    # The heartbeat bypasses SQLAlchemy's Connection (db/engine.py RawWrite);
    # reads do not. The bench's counter must see both, on every dialect.
    sql_counter = _bench_module().sql_counter
    group = make_group(sql_url)
    service = group.register("compute-1", "nova-compute")
    with sql_counter(group.engine) as counts:
        for _ in range(3):
            group.heartbeat(service)
    assert counts == {"statements": 3, "begins": 0, "pings": 0, "commits": 3, "rollbacks": 0}
    with sql_counter(group.engine) as counts:
        assert group.get(service).service.report_count == 3
    assert counts["statements"] == 1  # the SELECT, through a Connection


@pytest.mark.parametrize("target", TARGETS)
def test_daemon_answered_every_heartbeat(report: dict, target: str) -> None:
    daemon = report["targets"][target]["daemon"]
    for run in ("heartbeat", "heartbeat_paced"):  # as fast as it answers; paced
        beat = daemon[run]
        assert beat["requests"] > 0
        assert beat["non_2xx"] == 0
        assert beat["p99_ms"] is not None
    paced = daemon["heartbeat_paced"]
    # heartbeat.lua's send slots never offer more than the rate, whatever the daemon does.
    assert 0 < paced["requests"] <= paced["offered_per_s"] * (max(1, daemon["wrk_seconds"]) + 1)
    assert daemon["first_sweep_s"] >= 0  # the bench waited for the fleet's first transitions
    assert daemon["checks"]["services"] == 200
    assert daemon["checks"]["metrics"] == 200
    assert daemon["checks"]["services_listed"] == 200
    # wrk rotated over every id, the never-beating tenth included: all are up now.
    assert daemon["checks"]["services_up"] == 200
    assert daemon["rss_mb"]["after_reads"] > 0


@pytest.mark.parametrize("target", TARGETS)
def test_a_killed_reporter_is_detected_and_evented(report: dict, target: str) -> None:
    detection = report["targets"][target]["detection"]
    for run in detection["runs"]:
        assert run["down_s"] is not None
        assert run["event_s"] is not None


def test_sweeper_bench_compares_every_value(tmp_path: Path) -> None:
    """bench/sweeper.py: a daemon per value of the varied option, each answering its window."""
    if shutil.which("wrk") is None:
        unavailable("wrk", "the daemon scenario's load generator (Debian package wrk)")
    out = tmp_path / "slices.json"
    argv = ["--quick", "--driver", "db-sqlite", "--vary", "sweep_slice=50,0", "--json", str(out)]
    proc = run_bench("sweeper.py", argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "median p99 ms by sweep_slice" in proc.stdout
    result = json.loads(out.read_text())["targets"]["db-sqlite"]
    assert result["option"] == "sweep_slice"
    assert set(result["runs"]) == {"50", "0"}
    for (run,) in result["runs"].values():
        assert 0 < run["requests"] <= result["offered_per_s"] * (result["wrk_seconds"] + 1)
        assert run["non_2xx"] == 0
        # 0 when the daemon before it still held the sweeper lease (leader/lease.py).
        assert run["last_sweep_s"] is not None and run["last_sweep_s"] >= 0


def test_status_page_bench_drives_both_pages_through_a_storm(tmp_path: Path) -> None:
    """bench/status_page.py: the storm alone, then each page seeing its events and refreshing."""
    out = tmp_path / "page.json"
    proc = run_bench("status_page.py", ["--quick", "--json", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CPU s/min over the storm alone" in proc.stdout
    result = json.loads(out.read_text())["targets"]["db-sqlite"]
    assert set(result["runs"]) == {"none", "old", "new"}
    for policy, (run,) in result["runs"].items():
        assert run["flips"] > 0 and run["cpu_s"] >= 0, policy
        if policy != "none":
            assert run["events"] > 0 and run["refreshes"] >= 1, run
            # Every refresh is 2 (new) or 3 (old) requests, besides the long polls.
            assert run["requests"] >= run["refreshes"] * (3 if policy == "old" else 2), run


def test_paced_sql_sends_every_due_write_once(sql_url, make_group, tmp_path: Path) -> None:
    """bench/paced_sql.py, the daemon's paced floor: each due write lands on one row, once."""
    group = make_group(sql_url)
    services = [group.register(f"compute-{i}", "nova-compute") for i in range(20)]
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(s.uuid for s in services) + "\n")
    argv = ["--url", sql_url, "--ids", str(ids), "--rate", "200", "--seconds", "0.5"]
    proc = run_bench("paced_sql.py", [*argv, "--connections", "2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["requests"] == 100  # rate x seconds: no more, no fewer
    assert result["rows_changed"] == 100
    assert result["connections"] == 2
    assert 0 < result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"]
    counts = [group.get(s).service.report_count for s in services]
    assert counts == [5] * 20  # the ids in rotation, as heartbeat.lua sends them


def test_paced_sql_refuses_bad_arguments(tmp_path: Path) -> None:
    empty = tmp_path / "ids.txt"
    empty.write_text("")
    proc = run_bench("paced_sql.py", ["--url", "sqlite://", "--ids", str(empty)])
    assert proc.returncode == 2
    assert "--ids" in proc.stderr and "names no service" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_paced_sql_fails_when_a_write_fails(tmp_path: Path) -> None:
    """No table to write to: every write fails, so the window is refused, not reported."""
    ids = tmp_path / "ids.txt"
    ids.write_text("some-uuid\n")
    url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    proc = run_bench("paced_sql.py", ["--url", url, "--ids", str(ids), "--seconds", "0.1"])
    assert proc.returncode == 1
    assert "paced_sql: cannot write to" in proc.stderr and "services" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_bare_tooz_answers_every_request_with_one_members_heartbeat(zookeeper_server) -> None:
    """bench/bare_tooz.py, the tooz-zookeeper daemon's floor: each request is one heartbeat."""
    if shutil.which("wrk") is None:
        unavailable("wrk", "the bare route's load generator (Debian package wrk)")
    url = f"zookeeper://{zookeeper_server.address}"
    argv = ["--url", url, "--members", "5", "--rate", "200", "--seconds", "1"]
    proc = run_bench("bare_tooz.py", [*argv, "--windows", "2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["members"] == 5 and result["members_beaten"] == 5
    windows = result["windows"]
    assert len(windows) == 2 and all(w["non_2xx"] == 0 for w in windows)
    answered = sum(w["requests"] for w in windows)
    assert 0 < answered <= 2 * 200 * 2  # at most the offered rate, with a second's slack
    # wrk counts the responses it saw; one still in flight when a window
    # ended was answered too: at most one per connection per window.
    assert answered <= result["heartbeats"] <= answered + 2 * 50


def test_bare_tooz_refuses_an_unreachable_backend() -> None:
    url = f"zookeeper://127.0.0.1:{free_port()}?timeout=1"
    proc = run_bench("bare_tooz.py", ["--url", url, "--members", "1", "--seconds", "0.1"])
    assert proc.returncode == 1
    assert "bare_tooz: cannot join 1 members at" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_zookeeper_raw_floors_read_what_get_all_reads(tmp_path: Path) -> None:
    """The floors that parse MultiRead's answers themselves (bench.Raw) agree with get_all."""
    out = tmp_path / "bench-zookeeper.json"
    argv = ["--quick", "--driver", "zookeeper", "--services", "200", "--no-daemon"]
    proc = run_bench("run.py", [*argv, "--no-detection", "--json", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    bulk = json.loads(out.read_text())["targets"]["zookeeper"]["bulk"]["200"]
    assert bulk["agree"]["raw_multiread"] is True
    assert bulk["agree"]["raw"] is True
    assert bulk["up"] == 180


def test_bare_commit_writes_each_batch_and_answers_each_beat(postgresql_db, make_group) -> None:
    """bench/bare_commit.py, the PostgreSQL write floors: a live row is beaten (204), no row
    404; a registration writes a row and its event (201), a known name writes nothing (200)."""
    empty_tables(postgresql_db)
    service = make_group(postgresql_db).register("floor-host", "floor")
    port = free_port()
    argv = [sys.executable, "bench/bare_commit.py", "--url", postgresql_db, "--port", str(port)]
    proc = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/v1/services"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                beat = httpx.post(f"{url}/{service.uuid}/heartbeat", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, (
                    "bare_commit did not start"
                )
                time.sleep(0.05)
        assert beat.status_code == 204
        assert httpx.post(f"{url}/{uuid.uuid4()}/heartbeat", timeout=5).status_code == 404
        # Registrations: a new name is 201 with a new row and its event, a known one 200.
        answers = [
            httpx.post(url, json={"host": host, "binary": "floor"}, timeout=5)
            for host in ("floor-new", "floor-host", "floor-new")
        ]
    finally:
        proc.terminate()
        proc.wait(10)
    assert [a.status_code for a in answers] == [201, 200, 200]
    assert answers[1].json()["id"] == service.uuid
    assert answers[0].json()["id"] == answers[2].json()["id"]
    new = make_group(postgresql_db).get(answers[0].json()["id"])
    assert (new.service.host, new.state.value, new.service.observed_state) == (
        "floor-new",
        "down",
        "down",
    )
    assert [(e.host, e.cause) for e in make_group(postgresql_db).events().events] == [
        ("floor-host", "registered"),
        ("floor-new", "registered"),
    ]
    engine = sa.create_engine(postgresql_db)
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT report_count, last_seen_up FROM services WHERE uuid = :u"),
            {"u": service.uuid},
        ).one()
    engine.dispose()
    assert row.report_count == 1 and row.last_seen_up is not None


def test_heartbeat_lua_spaces_its_threads_evenly_over_the_ids(tmp_path: Path) -> None:
    """Each wrk thread walks the ids from its own start, half the fleet apart with two.

    A recording HTTP server stands in for the daemon; wrk is paced so that
    neither thread gets far: the ids beaten are two runs, one from the start
    of the file and one from its middle.
    """
    if shutil.which("wrk") is None:
        unavailable("wrk", "the heartbeat load generator (Debian package wrk)")
    count = 10_000
    ids = [f"id-{i:05d}" for i in range(count)]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("".join(f"{i}\n" for i in ids))
    seen: list[str] = []

    class Recorder(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            seen.append(self.path.split("/")[3])
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        lua = ROOT / "bench" / "heartbeat.lua"
        env = {
            "SG_IDS": str(ids_file),
            "SG_RATE": "100",
            "SG_THREADS": "2",
            "PATH": "/usr/bin:/bin",
        }
        url = f"http://127.0.0.1:{server.server_port}"
        argv = ["wrk", "-t2", "-c2", "-d2s", "-s", str(lua), url]
        subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    beaten = sorted({ids.index(i) for i in seen})
    assert len(seen) < count // 4  # paced: neither thread wrapped into the other's run
    first = [i for i in beaten if i < count // 2]
    second = [i for i in beaten if i >= count // 2]
    # Each thread's run is contiguous from its own start, half the ids apart
    # (give or take the request wrk builds before the first one it sends).
    assert first and first == list(range(first[0], first[0] + len(first)))
    assert second and second == list(range(second[0], second[0] + len(second)))
    assert abs(second[0] - first[0] - count // 2) <= 2, (first[:3], second[:3])
