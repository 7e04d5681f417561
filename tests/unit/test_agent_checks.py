"""The agent's three checks against real commands, processes and an HTTP server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from servicegroup.agent import check_command, check_http, check_pidfile
from servicegroup.from_json import service_from_json
from tests.functional.daemon import free_port


def test_command_passes_on_exit_0_and_fails_otherwise_saying_why() -> None:
    assert check_command(["true"], timeout=5).ok
    failed = check_command([sys.executable, "-c", "import sys; sys.exit('db gone')"], timeout=5)
    assert not failed.ok
    assert "exited 1" in failed.detail and "db gone" in failed.detail


def test_command_runs_without_a_shell() -> None:
    # With a shell this would be true; as argv it is `test` with one odd argument.
    outcome = check_command(["test", "-e", "/ || true"], timeout=5)
    assert not outcome.ok


def test_command_that_cannot_run_or_hangs_fails() -> None:
    missing = check_command(["/no/such/command"], timeout=5)
    assert not missing.ok and "cannot run" in missing.detail
    hung = check_command(["sleep", "30"], timeout=0.2)
    assert not hung.ok and "did not finish within 0.2s" in hung.detail


def test_pidfile_of_a_live_process_passes_and_of_a_dead_one_fails(tmp_path: Path) -> None:
    pidfile = tmp_path / "svc.pid"
    child = subprocess.Popen(["sleep", "600"])
    try:
        pidfile.write_text(f"{child.pid}\n")
        assert check_pidfile(str(pidfile)).ok
    finally:
        child.kill()
        child.wait()  # reaped: a zombie would still answer kill(pid, 0)
    dead = check_pidfile(str(pidfile))
    assert not dead.ok and "not running" in dead.detail


@pytest.mark.parametrize("content", [None, "", "garbage", "-5", "0", "12 34", "9" * 40])
def test_missing_or_garbled_pidfile_fails(tmp_path: Path, content: str | None) -> None:
    pidfile = tmp_path / "svc.pid"
    if content is not None:
        pidfile.write_text(content)
    assert not check_pidfile(str(pidfile)).ok


def test_pidfile_of_a_process_we_may_not_signal_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another user's process answers signal 0 with EPERM: it exists, so the
    # check passes. Simulated, because as root every process may be signalled.
    def eperm(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", eperm)
    pidfile = tmp_path / "other-user.pid"
    pidfile.write_text("4242")
    assert check_pidfile(str(pidfile)).ok


def test_http_check_wants_2xx(status_server: tuple[str, list[int]]) -> None:
    url, status = status_server
    for code, ok in [(200, True), (204, True), (302, False), (404, False), (503, False)]:
        status[0] = code
        outcome = check_http(url, timeout=5)
        assert outcome.ok is ok, code
        assert str(code) in outcome.detail


def test_http_check_fails_when_nothing_listens() -> None:
    outcome = check_http(f"http://127.0.0.1:{free_port()}/", timeout=2)
    assert not outcome.ok and "ConnectError" in outcome.detail


def test_service_from_json_round_trips_the_daemon_shape() -> None:
    data = {
        "id": "0b5c0000-0000-4000-8000-000000000000",
        "host": "h",
        "binary": "b",
        "topic": None,
        "availability_zone": "az",
        "version": 3,
        "disabled": False,
        "disabled_reason": None,
        "forced_down": False,
        "state": "down",
        "last_heartbeat": None,
        "report_count": 0,
        "created_at": "2024-05-01T09:00:00.000000Z",
        "updated_at": None,
    }
    service = service_from_json(data)
    assert (service.uuid, service.host, service.availability_zone) == (data["id"], "h", "az")
    assert service.created_at.tzinfo is not None


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--check", "  "], "check: must be a command"),
        (["--check", "true", "--interval", "0"], "interval: must be a positive"),
        (["--check", "true", "--interval", "nan"], "interval: must be a positive"),
        (["--pidfile", "p", "--check-timeout", "-1"], "check-timeout: must be a positive"),
        (["--pidfile", "p", "--check", "true"], "not allowed with argument"),
        ([], "one of the arguments --check --pidfile --http-check is required"),
    ],
)
def test_agent_command_line_mistakes_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    from servicegroup import cli

    code = cli.main(["agent", "--host", "h", "--binary", "b", "--daemon-url", "http://x", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert fragment in err and len(err.strip().splitlines()) == 1
