"""The installed `servicegroup` console script, run as a real process.

In-process tests cannot see what the entry point, sys.exit and the
interpreter's own error printing do with our exit codes and stderr.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from servicegroup import ServiceGroup
from tests.servers import IN_CI

SCRIPT = Path(sys.executable).parent / "servicegroup"

pytestmark = pytest.mark.skipif(
    not SCRIPT.exists() and not IN_CI,  # under CI a missing script fails below instead
    reason=f"console script not installed next to {sys.executable}",
)


def servicegroup(*argv: str, home: Path) -> subprocess.CompletedProcess[str]:
    # A private HOME so a developer's ~/.servicegroup cannot leak into the run.
    env = {**os.environ, "HOME": str(home)}
    return subprocess.run(
        [str(SCRIPT), *argv], capture_output=True, text=True, env=env, timeout=60, check=False
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "servicegroup.conf"
    path.write_text(f"[database]\nconnection = sqlite:///{tmp_path / 'sg.sqlite'}\n")
    return path


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("servicegroup: error: ")
    assert fragment in lines[0]


def test_help(tmp_path: Path) -> None:
    result = servicegroup("--help", home=tmp_path)
    assert result.returncode == 0
    for command in ("db", "serve", "service", "version"):
        assert command in result.stdout


def test_db_upgrade_then_list_an_empty_database(tmp_path: Path, config: Path) -> None:
    result = servicegroup("--config-file", str(config), "db", "upgrade", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("database upgraded from none to revision ")
    assert (tmp_path / "sg.sqlite").exists()

    result = servicegroup("--config-file", str(config), "service", "list", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:3] == ["id", "host", "binary"]
    assert len(result.stdout.splitlines()) == 1


def test_unmigrated_database_exits_1_naming_db_upgrade(tmp_path: Path, config: Path) -> None:
    result = servicegroup("--config-file", str(config), "service", "list", home=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert_one_line_error(result, "run `servicegroup db upgrade`")


def test_invalid_input_exits_2_with_one_line(tmp_path: Path, config: Path) -> None:
    servicegroup("--config-file", str(config), "db", "upgrade", home=tmp_path)
    result = servicegroup("--config-file", str(config), "service", "show", "x", home=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "id: must be a UUID")


def test_usage_error_exits_2_with_one_line(tmp_path: Path) -> None:
    result = servicegroup("service", "list", "--state", "sideways", home=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "invalid choice: 'sideways'")


def test_events_follow_prints_each_event_as_it_happens(tmp_path: Path, config: Path) -> None:
    """--follow keeps long-polling and prints one JSON line per event, as they are recorded."""
    assert (
        servicegroup("--config-file", str(config), "db", "upgrade", home=tmp_path).returncode == 0
    )
    follower = subprocess.Popen(
        [str(SCRIPT), "--config-file", str(config), "events", "--follow", "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    try:
        url = f"sqlite:///{tmp_path / 'sg.sqlite'}"
        with ServiceGroup.from_options(database__connection=url) as group:
            service = group.register("host-1", "compute")
            first = json.loads(follower.stdout.readline())  # blocks until printed
            group.set_forced_down(service, True)
            second = json.loads(follower.stdout.readline())
        assert (first["service_id"], first["cause"]) == (service.uuid, "registered")
        assert (second["service_id"], second["state"]) == (service.uuid, "down")
        assert second["id"] > first["id"]
        assert follower.poll() is None  # still following
    finally:
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=30)
    assert "Traceback" not in err
