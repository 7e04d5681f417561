"""The Prometheus alert rules load, and their promtool unit tests pass.

etc/servicegroup-alerts.test.yml holds the cases that matter: a real down
pages, a backend outage pages for the backend and NOT for every service,
recovery clears both. promtool missing skips, except in CI where it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ETC = Path(__file__).resolve().parents[2] / "etc"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing (scripts/install-test-backends.sh installs it)")
        pytest.skip("promtool is not installed")
    return found


def run(*args: str) -> str:
    result = subprocess.run(
        [promtool(), *args], cwd=ETC, capture_output=True, text=True, timeout=60
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_alert_rules_are_valid() -> None:
    assert "SUCCESS" in run("check", "rules", "servicegroup-alerts.yml")


def test_alert_rules_unit_tests_pass() -> None:
    assert "SUCCESS" in run("test", "rules", "servicegroup-alerts.test.yml")
