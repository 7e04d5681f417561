"""Pause the cyclic garbage collector while a bulk read builds its objects.

Speed trick, for processes that call the API with CPython's default
collector settings (a scheduler, a CLI, the bench harness): a get_all of
10,000 services allocates some 40,000 tracked objects (tuples, Services,
statuses), which triggers several collections, each walking every live
object of the process. Nothing built there forms a cycle, so deferring
collection until the objects are built loses nothing; reference counting
still frees everything as usual.

Measured for issue 17 (bench/run.py, 10,000 services, alternated): SQLite
get_all 50-51 ms with the pause against 92-98 ms without (x1.0-1.1 of the
raw read against x1.1-1.6), 0.4 collections a read against 11; without it,
tooz-redis's get_all went from 123 to 211 ms. In the daemon, whose young
generation threshold is 100,000 (server/process_tuning.py), it changes
nothing measurable (0 +- 0.3% of a read's instructions, callgrind).

Only around building, never around backend I/O: a ZooKeeper read of 10,000
takes over a second, the sweeper reads every second, and collection paused
through those reads meant collection never ran while other threads made
garbage cycles (the daemon grew to 1 GB).
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_holders = 0
_paused_by_us = False


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Collection off for the block (nestable, thread-safe); left alone if already off."""
    global _holders, _paused_by_us
    with _lock:
        if _holders == 0 and gc.isenabled():
            gc.disable()
            _paused_by_us = True
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _paused_by_us:
                _paused_by_us = False
                gc.enable()
