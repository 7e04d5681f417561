"""`servicegroup keystone-token`: a current Keystone token in a file, for programs that read one.

Prometheus cannot sign in to Keystone, but reads its scrape token from
`authorization.credentials_file` again at every scrape. So this writes a
token for the OpenStack credentials to a file and, with --renew, writes a
new one well before the current one expires: a reader of the file always
finds a valid token, never a half-written one.

- Atomic: the token goes to a temporary file in the same directory (mode
  0600 from its creation), is flushed to disk, then renamed over the file.
- Renewal: when less than `renew_before` seconds (but at least half the
  token's lifetime) are left, by the token's own issued_at and expires_at.
  keystoneauth would reuse a token until two minutes before its expiry, so
  renewal drops it (Session.invalidate) and signs in again.
- A renewal that fails (Keystone down, credentials revoked) is logged once,
  retried every RETRY_INTERVAL seconds, and the file keeps the previous
  token, valid until its own expiry.
- The token is never printed or logged; only its expiry is.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from keystoneauth1.identity.base import BaseIdentityPlugin
from keystoneauth1.session import Session

from servicegroup.clock import SYSTEM_CLOCK, Clock
from servicegroup.exceptions import ConfigError, InvalidInput, ServiceGroupError
from servicegroup.keystone_session import auth_url, keystone_errors

LOG = logging.getLogger(__name__)

# Renew when this much of the token's life is left: several scrapes' worth, and
# room to retry through a short Keystone outage before the old token expires.
DEFAULT_RENEW_BEFORE = 300.0
RETRY_INTERVAL = 5.0


@dataclass(frozen=True)
class Written:
    """What a write left in the file, minus the token itself."""

    issued: datetime
    expires: datetime


def write_atomically(path: Path, secret: str) -> None:
    """Replace `path` with `secret` in one rename; a reader sees the old file or the new one.

    The temporary file is created 0600 (mkstemp), so the token is never
    readable by others, even for an instant; the final file keeps that mode.
    """
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"--output {path}: cannot write there: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(secret)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        os.unlink(temporary)
        if isinstance(exc, OSError):
            raise ConfigError(f"--output {path}: cannot write there: {exc.strerror}") from None
        raise


class TokenFile:
    """The token of one keystoneauth Session, kept fresh in one file."""

    def __init__(
        self,
        session: Session,
        path: Path,
        renew_before: float = DEFAULT_RENEW_BEFORE,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not isinstance(session.auth, BaseIdentityPlugin):
            raise InvalidInput("--os-auth-type", "must sign in to Keystone to get a token")
        if isinstance(renew_before, bool) or not renew_before > 0:
            raise InvalidInput("renew-before", "must be a positive number of seconds")
        self.session = session
        self.plugin = session.auth
        self.path = path
        self.renew_before = renew_before
        self.clock = clock
        self.where = auth_url(session)
        self.stop = threading.Event()

    def write(self) -> Written:
        """Sign in anew and write the new token; Keystone's refusals as servicegroup errors."""
        self.session.invalidate()  # else keystoneauth hands back the token it holds
        with keystone_errors(self.where):
            access = self.plugin.get_access(self.session)
        if access.auth_token is None or access.expires is None or access.issued is None:
            raise ServiceGroupError(f"Keystone at {self.where} answered without a token")
        write_atomically(self.path, access.auth_token)
        return Written(access.issued, access.expires)

    def renew_at(self, written: Written) -> datetime:
        """When to replace the token: renew_before ahead of expiry, at most half its life."""
        lifetime = written.expires - written.issued
        ahead = min(lifetime / 2, timedelta(seconds=self.renew_before))
        return written.expires - ahead

    def run(self) -> int:
        """Write, then renew until stop is set; 0 then. The first write's errors propagate."""
        written = self.write()
        LOG.info("wrote a Keystone token expiring %s to %s", _iso(written.expires), self.path)
        next_at, failing = self.renew_at(written), False
        while not self.stop.wait(self._until(next_at)):
            try:
                written = self.write()
            except ServiceGroupError as exc:
                if not failing:
                    LOG.warning(
                        "cannot renew the Keystone token in %s: %s; retrying every %gs; "
                        "the token there expires %s",
                        self.path,
                        exc,
                        RETRY_INTERVAL,
                        _iso(written.expires),
                    )
                next_at, failing = self.clock.now() + timedelta(seconds=RETRY_INTERVAL), True
                continue
            if failing:
                LOG.info("Keystone answers again: the token in %s is renewed", self.path)
            LOG.info(
                "renewed the Keystone token in %s; expires %s", self.path, _iso(written.expires)
            )
            next_at, failing = self.renew_at(written), False
        return 0

    def _until(self, moment: datetime) -> float:
        return max(0.0, (moment - self.clock.now()).total_seconds())


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")
