"""Pause the cyclic garbage collector while a bulk read builds its objects.

A get_all of 10,000 services allocates some 40,000 tracked objects (tuples,
Services, statuses), which triggers several collections, each walking every
live object of the process: measured at 10,000 on PostgreSQL, collections
were half of get_all's time. Nothing built there forms a cycle, so deferring
collection until the objects are built loses nothing; reference counting
still frees everything as usual.

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
