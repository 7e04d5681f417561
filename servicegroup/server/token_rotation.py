"""Token files read again while the daemon runs: on SIGHUP, and when one changes.

Rotating a token must not take a restart, nor drop a request. A thread looks
at the files' stat every `[api] token_file_poll_interval` seconds, and at
once after a SIGHUP; when a file changed, or a SIGHUP came since the last
look, it reads them all, builds a
whole new immutable Tokens and swaps it into the Guard, one reference
(auth.Guard): a request checks against the old set or the new one, never
half of each.

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

    reloader = TokenReloader(conf, app.guard)
    with reloader.on_sighup(), reloader.running(conf.api.token_file_poll_interval):
        server.run()
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
from collections.abc import Callable, Iterator

from oslo_config import cfg

from servicegroup.exceptions import ConfigError
from servicegroup.server.auth import Guard, Tokens

LOG = logging.getLogger(__name__)

KINDS = ("read", "agent", "admin")

# What a look at a file compares: a new inode is a file moved into place,
# size and mtime a file written in place, ctime a chmod or chown that makes
# a refused file readable. None: the file is not there (or not reachable).
Stamp = tuple[int, int, int, int] | None


def stamp(path: str) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def token_files(conf: cfg.ConfigOpts) -> dict[str, list[str]]:
    """Each kind's token files, as `[api]` lists them."""
    return {kind: list(getattr(conf.api, f"{kind}_token_files")) for kind in KINDS}


class TokenReloader:
    """Reads the token files again when asked or when they change, and swaps the result in.

    poll() is the whole decision, one look; run by the watcher thread
    (running()) or directly by a test. The SIGHUP handler only counts: a
    signal handler runs between two bytecodes of the main thread, where
    taking a lock or reading files could deadlock or stall the event loop.
    """

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        guard: Guard,
        load: Callable[[cfg.ConfigOpts], Tokens] = Tokens.from_conf,
        look: Callable[[str], Stamp] = stamp,
    ) -> None:
        self._conf = conf
        self._guard = guard
        self._load = load
        self._look = look
        self._files = token_files(conf)
        self._paths = [path for paths in self._files.values() for path in paths]
        # None: never looked, so the first poll reads the files. A worker forked
        # after its parent read them, or a file changed before the first look,
        # is then never missed.
        self._stamps: list[Stamp] | None = None
        self.hangups = 0  # written by the SIGHUP handler only
        self._hangups_seen = 0
        self._stopping = False
        # The watcher sleeps in select() on this pipe: a SIGHUP or a stop writes a byte
        # to wake it at once, whatever the poll interval (see hangup()).
        self._wake: tuple[int, int] | None = None

    @property
    def watching(self) -> bool:
        """Whether there is any file to read again (inline tokens are read at start only)."""
        return bool(self._paths)

    def hangup(self, _sig: int = signal.SIGHUP, _frame: object = None) -> None:
        """The SIGHUP handler: ask for a reload, and wake the watcher to make it now.

        A write to a non-blocking pipe is all a handler may safely do: it runs
        between two bytecodes of the main thread, which may hold any lock
        (an Event's, say) at that moment.
        """
        self.hangups += 1
        self._nudge()

    def _nudge(self) -> None:
        if self._wake is not None:
            with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
                os.write(self._wake[1], b"\0")

    def poll(self) -> bool:
        """One look: reload when a SIGHUP came or a file changed; True when the tokens changed."""
        hangups = self.hangups
        stamps = [self._look(path) for path in self._paths]
        if hangups == self._hangups_seen and stamps == self._stamps:
            return False
        why = "SIGHUP" if hangups != self._hangups_seen else "a token file changed"
        if self._stamps is None:
            why = "start"
        self._hangups_seen, self._stamps = hangups, stamps
        return self.reload(why)

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

    @contextlib.contextmanager
    def running(self, interval: float) -> Iterator[None]:
        """The watcher thread: a look every `interval` seconds, and at once after a SIGHUP."""
        if not self.watching:
            yield
            return
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        self._stopping, self._wake = False, (read_end, write_end)
        thread = threading.Thread(
            target=self._watch, args=(interval,), name="servicegroup-token-files", daemon=True
        )
        thread.start()
        try:
            yield
        finally:
            self._stopping = True
            self._nudge()
            thread.join()
            self._wake = None
            os.close(read_end)
            os.close(write_end)

    def _watch(self, interval: float) -> None:
        assert self._wake is not None
        read_end = self._wake[0]
        while not self._stopping:
            try:
                self.poll()
            except Exception:  # a bug here must not end rotation for the daemon's lifetime
                LOG.exception("token files: the look failed")
            woken, _, _ = select.select([read_end], [], [], interval)
            if woken:
                os.read(read_end, 4096)  # every wake-up so far: one look answers them all

    @contextlib.contextmanager
    def on_sighup(self) -> Iterator[None]:
        """SIGHUP asks for a reload while this lasts (main thread only: signals go there)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGHUP, self.hangup)
        try:
            yield
        finally:
            signal.signal(signal.SIGHUP, previous)


@contextlib.contextmanager
def sighup_ignored() -> Iterator[None]:
    """SIGHUP ignored until a reloader takes it: its default action ends the process.

    An operator's `kill -HUP` that lands while the daemon starts must not
    stop it; the reloader's first look reads every file anyway.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)
