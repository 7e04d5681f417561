"""The daemon process's memory and garbage-collector settings, set once at start-up.

Both are speed or memory tricks of the long-running daemon only (a library
caller's process is its own to tune), each measured on the bench daemon
scenario (10,000 services). They change process-wide settings, so serve()
calls them and nothing else does.

Usage::

    bound_malloc()   # before any thread starts
    ...
    tune_gc()        # once start-up has built its long-lived objects
"""

from __future__ import annotations

import ctypes
import gc

# glibc's mallopt() parameters, and the values bound_malloc() sets.
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MALLOC_ARENAS = 2
MMAP_THRESHOLD = 128 * 1024
# Net allocations between two young collections: see tune_gc().
GC_YOUNG_THRESHOLD = 100_000


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
    alternated). With it, a malloc_trim after each whole-fleet response
    gave back 0.4 MB more (102.8 against 103.2 MB, spread 1.5 MB; issue
    17), within noise, so there is none.
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
