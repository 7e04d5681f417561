"""The daemon process's memory and garbage-collector settings, set once at start-up.

Both are speed or memory tricks of the long-running daemon only (a library
caller's process is its own to tune), each measured on the bench daemon
scenario (10,000 services). They change process-wide settings, so serve()
calls them and nothing else does.

Usage::

    bound_malloc()   # before any thread starts
    ...
    tune_gc()        # once start-up has built its long-lived objects
    with giving_back_memory():
        ...          # serve
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import threading
from collections.abc import Callable, Iterator
from typing import cast

# glibc's mallopt() parameters, and the values bound_malloc() sets.
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MALLOC_ARENAS = 2
MMAP_THRESHOLD = 128 * 1024
# Net allocations between two young collections: see tune_gc().
GC_YOUNG_THRESHOLD = 100_000
# Seconds between two malloc_trim() calls: see giving_back_memory().
TRIM_INTERVAL = 10.0


def bound_malloc() -> bool:
    """Make glibc give back what a 10,000-service read took; False where there is no mallopt.

    Two glibc defaults keep memory the daemon never reuses. A heap (arena)
    per thread, up to 8 per core: the heartbeat threads, the sweeper and
    the threadpool each keep a partly free one; two are enough while the
    GIL serialises nearly every allocation anyway. And the mmap threshold
    rises to the size of the largest block freed (up to 32 MB): after the
    first list or scrape, their multi-MB bodies come from a heap, where
    freeing them leaves holes the process keeps. A fixed threshold (glibc's
    initial 128 KiB) keeps such blocks in mmap, unmapped on free.

    Measured (memcached, 10,000 services, bench daemon scenario): RSS
    after the list and metrics reads 126.1 -> 118.0 MB (median of 3,
    alternated). What this leaves in the heaps, giving_back_memory()
    returns.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc-like: nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(M_ARENA_MAX, MALLOC_ARENAS) == 1
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and ok)


def tune_gc() -> None:
    """Keep the daemon's garbage collector off the request path.

    Freeze what startup built (modules, the app, SQLAlchemy's metadata):
    every full collection walks every tracked object, those live as long as
    the process, so freezing them loses nothing.

    Then raise the young generation's threshold. A sweep or a 10,000-row
    list holds some 40,000 objects for a moment; with the default 700, each
    one pushed them through a young and a middle collection into the old
    generation, so a full collection (26-44 ms, up to 135 ms) ran every few
    seconds while 50 clients beat. The threshold counts allocations net of
    frees, so with 100,000 such transient objects are gone before any
    collection sees them; cycles still get collected, at most 100,000
    objects later. Measured (memcached, 10,000 services, wrk -c50, two runs
    each): collections took 2.2-5.1 s per run, 30 of them full, against
    0.36-0.48 s and at most one full one. With this setting, the pause
    around each bulk read (gcpause.py, for library callers) saves the
    daemon nothing measurable.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, looked up once; None where there is none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    return cast(Callable[[int], int], trim)


_TRIM = _malloc_trim()


def give_back() -> bool:
    """Return the heaps' free pages to the system now; False where there is no malloc_trim."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


@contextlib.contextmanager
def giving_back_memory(interval: float = TRIM_INTERVAL) -> Iterator[threading.Thread | None]:
    """While in the block, a thread gives the heaps' free pages back every `interval` s.

    glibc returns a heap's free memory to the system only from the top of
    the heap. A whole-fleet read at 100,000 services (a list, a scrape, a
    full sweep) frees tens of MB of blocks too big for Python's own
    allocator (row buffers, dict tables, mid-sized strings) between blocks
    that stay, so the daemon kept them for good. malloc_trim(0) gives back
    every whole free page wherever it is. It walks the free blocks without
    the GIL (ctypes lets go of it), taking 15-22 ms for a 340 MB heap.
    Measured at 100,000 services on PostgreSQL, one daemon through
    bench/fleet.py's steps: RSS 5 s after the lists and scrapes 364.2 and
    373.3 MB without (a malloc_trim(0) then gave back 50.7 and 55.9 MB),
    324.3 MB with; once the fleet had settled, 328.5 -> 292.1 MB. At
    10,000 services a trim gave back 0.4 MB, within noise (issue 17): the
    gain grows with the fleet. Every 10 s costs an idle daemon some 0.002
    core.
    """
    if not give_back():
        yield None
        return
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            give_back()

    thread = threading.Thread(target=run, name="give-back-memory", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join()
