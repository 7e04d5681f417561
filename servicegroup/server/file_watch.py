"""Files the daemon reads again while it runs: on SIGHUP, and when one changes.

Token files (token_rotation.py) and TLS files (tls.py) are rotated without
a restart the same way, through the one watcher here: a thread looks at
every watched file's stat each `[api] token_file_poll_interval` seconds,
and at once after a SIGHUP; a source whose files changed, or every source
after a SIGHUP, is asked to reload. What a reload reads, checks and swaps
in, and what it refuses, is the source's business; the watcher only decides
when.

One thread and one SIGHUP handler per daemon process (each `[api] workers`
worker watches for itself; the supervisor forwards SIGHUP to its workers,
workers.py).

Usage::

    watcher = FileWatcher([TokenReloader(conf, guard), CertReloader(tls, context)])
    with watcher.on_sighup(), watcher.running(conf.api.token_file_poll_interval):
        server.run()
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

LOG = logging.getLogger(__name__)

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


class Reloadable(Protocol):
    """Files read at start that a running daemon may read again."""

    @property
    def paths(self) -> Sequence[str]:
        """The files to watch; none: nothing to read again."""
        ...

    def reload(self, why: str) -> bool:
        """Read the files again; True when what the daemon uses changed.

        All or nothing: a reload that cannot be taken keeps what was loaded
        before and logs why, naming the option and the file; it never raises
        for a bad file.
        """
        ...


class FileWatcher:
    """Asks its sources to reload when asked (SIGHUP) or when their files change.

    poll() is the whole decision, one look; run by the watcher thread
    (running()) or directly by a test. The SIGHUP handler only counts: a
    signal handler runs between two bytecodes of the main thread, where
    taking a lock or reading files could deadlock or stall the event loop.
    """

    def __init__(self, sources: Sequence[Reloadable], look: Callable[[str], Stamp] = stamp) -> None:
        self._sources = [source for source in sources if source.paths]
        self._look = look
        # None: never looked, so the first poll reads the files. A worker forked
        # after its parent read them, or a file changed before the first look,
        # is then never missed.
        self._stamps: list[list[Stamp] | None] = [None] * len(self._sources)
        self.hangups = 0  # written by the SIGHUP handler only
        self._hangups_seen = 0
        self._stopping = False
        # The watcher sleeps in select() on this pipe: a SIGHUP or a stop writes a byte
        # to wake it at once, whatever the poll interval (see hangup()).
        self._wake: tuple[int, int] | None = None

    @property
    def watching(self) -> bool:
        """Whether there is any file to read again (inline tokens are read at start only)."""
        return bool(self._sources)

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
        """One look: reload each source whose files changed, or all after a SIGHUP;
        True when any reload changed what the daemon uses."""
        hangups = self.hangups
        hung_up = hangups != self._hangups_seen
        self._hangups_seen = hangups
        changed = False
        for index, source in enumerate(self._sources):
            stamps = [self._look(path) for path in source.paths]
            before = self._stamps[index]
            if not hung_up and stamps == before:
                continue
            why = "start" if before is None else "SIGHUP" if hung_up else "a file changed"
            # Taken before reading: a file replaced during the reload differs from
            # these at the next look, which reads it again.
            self._stamps[index] = stamps
            changed = source.reload(why) or changed
        return changed

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
            target=self._watch, args=(interval,), name="servicegroup-file-watch", daemon=True
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
                LOG.exception("watched files: the look failed")
            woken, _, _ = select.select([read_end], [], [], interval)
            if woken:
                os.read(read_end, 4096)  # every wake-up so far: one look answers them all

    def on_sighup(self) -> contextlib.AbstractContextManager[None]:
        """SIGHUP asks for a reload while this lasts."""
        return _sighup_handled_by(self.hangup)


def sighup_ignored() -> contextlib.AbstractContextManager[None]:
    """SIGHUP ignored until a watcher takes it: its default action ends the process.

    An operator's `kill -HUP` that lands while the daemon starts must not
    stop it; the watcher's first look reads every file anyway.
    """
    return _sighup_handled_by(signal.SIG_IGN)


@contextlib.contextmanager
def _sighup_handled_by(handler: Any) -> Iterator[None]:
    """SIGHUP goes to `handler` while this lasts, then back to what it was.

    Only the main thread may set a handler (and signals are delivered
    there); from any other thread this changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGHUP, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)
