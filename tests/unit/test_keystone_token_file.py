"""keystone-token's file: written atomically, 0600, renewed on schedule, outages retried.

The real Keystone and the real command are in
tests/functional/test_keystone_clients.py; here a stand-in identity plugin
(keystoneauth's public BaseIdentityPlugin) hands out tokens, and a clock
that leaps an hour at every reading makes every wait zero, so the loop's
decisions are checked without sleeping.
"""

from __future__ import annotations

import logging
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from keystoneauth1 import access
from keystoneauth1 import exceptions as ksa_exc
from keystoneauth1.identity import v3
from keystoneauth1.identity.base import BaseIdentityPlugin
from keystoneauth1.session import Session

from servicegroup.clock import Clock
from servicegroup.exceptions import ConfigError, InvalidInput
from servicegroup.keystone_token_file import TokenFile, Written, write_atomically
from tests.unit.test_cli import assert_one_line_error, run

ISSUED = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def test_the_file_is_replaced_whole_and_private(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("old")
    path.chmod(0o644)
    write_atomically(path, "new-token")
    assert path.read_text() == "new-token"  # no newline: a reader takes it as is
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["token"]


def test_an_unwritable_place_is_a_config_error_naming_output(tmp_path: Path) -> None:
    path = tmp_path / "missing-directory" / "token"
    with pytest.raises(ConfigError, match=r"--output .*missing-directory/token: cannot write"):
        write_atomically(path, "t")


def _token_file(tmp_path: Path, renew_before: float = 300.0, **kwargs: Any) -> TokenFile:
    auth = v3.Password(auth_url="http://127.0.0.1:1/v3", username="u", password="p")
    return TokenFile(Session(auth=auth), tmp_path / "token", renew_before, **kwargs)


@pytest.mark.parametrize(
    ("lifetime", "renew_before", "ahead"),
    [(3600, 300.0, 300), (10, 300.0, 5), (3600, 1.5, 1.5)],
)
def test_renewal_comes_renew_before_ahead_but_at_most_half_the_life(
    tmp_path: Path, lifetime: int, renew_before: float, ahead: float
) -> None:
    expires = ISSUED + timedelta(seconds=lifetime)
    token_file = _token_file(tmp_path, renew_before)
    assert token_file.renew_at(Written(ISSUED, expires)) == expires - timedelta(seconds=ahead)


@pytest.mark.parametrize("renew_before", [0.0, -1.0])
def test_renew_before_must_be_positive(tmp_path: Path, renew_before: float) -> None:
    with pytest.raises(InvalidInput) as caught:
        _token_file(tmp_path, renew_before)
    assert caught.value.field == "renew-before"


class LeapingClock(Clock):
    """An hour later at every reading: whatever the loop waits for is already due."""

    def __init__(self) -> None:
        self.at = ISSUED

    def now(self) -> datetime:
        self.at += timedelta(hours=1)
        return self.at


class Keystone(BaseIdentityPlugin):
    """Hands out token-1, token-2, ...; a scripted failure instead, when one is queued."""

    def __init__(self, failures: list[Exception]) -> None:
        super().__init__(auth_url="http://keystone.test/v3")
        self.failures = failures
        self.issued = 0
        self.token_file: TokenFile | None = None

    def get_auth_ref(self, session: Session, **kwargs: Any) -> access.AccessInfoV3:
        assert self.token_file is not None
        if self.issued and self.failures:
            # Meanwhile the file keeps the token written before.
            assert self.token_file.path.read_text() == f"token-{self.issued}"
            raise self.failures.pop(0)
        self.issued += 1
        if self.issued == 3:  # enough: end the loop after this write
            self.token_file.stop.set()
        body = {
            "token": {
                "issued_at": ISSUED.isoformat(),
                "expires_at": (ISSUED + timedelta(hours=1)).isoformat(),
            }
        }
        return access.AccessInfoV3(body, auth_token=f"token-{self.issued}")


def test_a_failed_renewal_is_logged_once_retried_and_the_old_token_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outage = [ksa_exc.ConnectFailure("connection refused")] * 3
    keystone = Keystone(outage)
    token_file = TokenFile(Session(auth=keystone), tmp_path / "token", clock=LeapingClock())
    keystone.token_file = token_file
    with caplog.at_level(logging.INFO, logger="servicegroup.keystone_token_file"):
        assert token_file.run() == 0
    assert (tmp_path / "token").read_text() == "token-3"
    messages = [record.getMessage() for record in caplog.records]
    warnings = [m for m in messages if m.startswith("cannot renew")]
    assert len(warnings) == 1 and "keystone: http://keystone.test/v3" in warnings[0]
    assert sum(m.startswith("Keystone answers again") for m in messages) == 1
    assert not any("token-" in m for m in messages)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--renew-before", "60"], "renew-before: only applies with --renew"),
        (["--renew", "--renew-before", "0"], "renew-before: must be a positive number"),
        (["--os-password", ""], "--os-password ($OS_PASSWORD): is required"),
    ],
)
def test_keystone_token_usage_errors_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    argv: list[str],
    named: str,
) -> None:
    for name, value in {
        "OS_AUTH_URL": "http://127.0.0.1:1/v3",
        "OS_USERNAME": "u",
        "OS_PASSWORD": "p",
        "OS_USER_DOMAIN_ID": "default",
        "OS_PROJECT_ID": "fleet",
    }.items():
        monkeypatch.setenv(name, value)
    output = tmp_path / "token"
    code, out, err = run(capsys, "keystone-token", "--output", str(output), *argv)
    assert code == 2 and out == ""
    assert_one_line_error(err, named)
    assert not output.exists()
