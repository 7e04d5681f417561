"""Token files read again while the daemon runs: on SIGHUP, and when one changes.

Rotating a token must not take a restart, nor drop a request. The daemon's
file watcher (file_watch.py: a look at the files' stat every
`[api] token_file_poll_interval` seconds, and at once after a SIGHUP) asks
TokenReloader to reload when a token file changed or a SIGHUP came; it reads
them all, builds a whole new immutable Tokens and swaps it into the Guard,
one reference (auth.Guard): a request checks against the old set or the new
one, never half of each.

A reload is all or nothing. It keeps the tokens loaded before, logs an error
naming the file (never a token) and waits for the next change or SIGHUP when:

- a file cannot be read (missing, unreadable, not UTF-8): a rename in flight
  or a permissions slip must not lock every agent out;
- it would leave a kind of token (read, agent, admin) with none while it has
  some: most often a file caught empty mid-write, and with no read token
  left reads would quietly be open to all;
- it would give tokens to a kind that has none: the routes were built
  without a check for it (auth.Guard), so the tokens would do nothing.

Starting or stopping to check a kind takes a restart; rotating its tokens
does not. Tokens given inline in the configuration file are read at start
only. Each daemon process (each `[api] workers` worker) watches for itself;
the supervisor forwards SIGHUP to its workers (workers.py).

Usage::

    watcher = FileWatcher([TokenReloader(conf, app.guard)])
    with watcher.on_sighup(), watcher.running(conf.api.token_file_poll_interval):
        server.run()
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from oslo_config import cfg

from servicegroup.exceptions import ConfigError
from servicegroup.server.auth import Guard, Tokens

LOG = logging.getLogger(__name__)

KINDS = ("read", "agent", "admin")


def token_files(conf: cfg.ConfigOpts) -> dict[str, list[str]]:
    """Each kind's token files, as `[api]` lists them."""
    return {kind: list(getattr(conf.api, f"{kind}_token_files")) for kind in KINDS}


class TokenReloader:
    """The token files as a file_watch.Reloadable: reads them all again and swaps the result in."""

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        guard: Guard,
        load: Callable[[cfg.ConfigOpts], Tokens] = Tokens.from_conf,
    ) -> None:
        self._conf = conf
        self._guard = guard
        self._load = load
        self._files = token_files(conf)
        self.paths = [path for paths in self._files.values() for path in paths]

    def reload(self, why: str) -> bool:
        """Read every file; swap the new tokens in when they may be, else keep the old ones."""
        old = self._guard.tokens
        try:
            new = self._load(self._conf)
            self._check(old, new)
        except ConfigError as exc:
            # ConfigError names the file and the rule, never a token.
            LOG.error("token reload (%s) refused, the tokens loaded before stay: %s", why, exc)
            return False
        if new == old:
            LOG.debug("token reload (%s): no token changed", why)
            return False
        self._guard.tokens = new  # the swap: one reference, read once per request
        LOG.info(
            "token reload (%s): now %d read, %d agent and %d admin tokens",
            why,
            len(new.read),
            len(new.agent),
            len(new.admin),
        )
        return True

    def _check(self, old: Tokens, new: Tokens) -> None:
        """Refuse a set that would turn a kind's checking on or off (see the module doc)."""
        for kind in KINDS:
            had, has = bool(getattr(old, kind)), bool(getattr(new, kind))
            if had == has:
                continue
            files = ", ".join(self._files[kind]) or "none"
            if had:
                raise ConfigError(
                    f"[api] {kind}_token_files ({files}) would leave no {kind} token; "
                    f"removing every {kind} token takes a restart"
                )
            raise ConfigError(
                f"[api] {kind}_token_files ({files}) would give {kind} tokens to a daemon "
                f"started with none; it checks no {kind} token until it restarts"
            )
