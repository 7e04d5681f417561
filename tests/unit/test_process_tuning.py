"""server/process_tuning.py: big blocks stay in mmap, so freeing them gives the memory back."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

from servicegroup.server import process_tuning

# In a fresh process: mallopt changes the whole process's allocator.
PROBE = textwrap.dedent(
    """
    import ctypes
    import sys

    from servicegroup.server import process_tuning

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = MallInfo2

    def mmapped(size):
        block = libc.malloc(size)
        count = libc.mallinfo2().hblks
        libc.free(block)
        return count - libc.mallinfo2().hblks

    tuned = process_tuning.bound_malloc() if sys.argv[1] == "tuned" else None
    # By default, freeing an 8 MiB block raises glibc's threshold past 1 MiB.
    libc.free(libc.malloc(8 << 20))
    print(tuned, mmapped(1 << 20), mmapped(1 << 10))
    """
)


def probe(mode: str) -> list[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    ).stdout.split()


def test_big_blocks_stay_mmapped_after_bound_malloc() -> None:
    # Untuned, after one big free a 1 MiB block comes from a heap, where its
    # memory stays once freed; tuned, it is mmapped (unmapped on free).
    # Small blocks come from a heap either way.
    assert probe("default") == ["None", "0", "0"]
    assert probe("tuned") == ["True", "1", "0"]


def test_tune_gc_raises_the_young_threshold_and_freezes_startup() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import gc; from servicegroup.server import process_tuning as t; t.tune_gc(); "
            "print(gc.get_threshold()[0], gc.get_freeze_count() > 0)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["100000", "True"]


# In a fresh process: blocks too big for Python's allocator and too small for
# mmap, freed between blocks that stay, as a whole-fleet read leaves them.
FRAGMENTED = textwrap.dedent(
    """
    import ctypes
    import re

    from servicegroup.server import process_tuning

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def rss_mb():
        status = open("/proc/self/status").read()
        return int(re.search(r"VmRSS:\\s+(\\d+)", status).group(1)) / 1024

    process_tuning.bound_malloc()
    blocks = [libc.malloc(64 << 10) for _ in range(4000)]  # 250 MiB, below the mmap threshold
    for block in blocks:
        ctypes.memset(block, 1, 64 << 10)
    for block in blocks[:-1:2]:  # every other one, none at the top of the heap
        libc.free(block)
    before = rss_mb()
    print(process_tuning.give_back(), round(before - rss_mb()))
    """
)


def test_give_back_returns_the_free_pages_between_blocks_that_stay() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FRAGMENTED], capture_output=True, text=True, check=True
    ).stdout.split()
    # 2,000 free 64 KiB blocks: 125 MiB that the heap keeps until trimmed.
    assert out[0] == "True"
    assert int(out[1]) >= 60  # 117 measured; 0 without give_back()


def test_giving_back_memory_trims_every_interval_until_the_block_ends(monkeypatch) -> None:
    calls = threading.Semaphore(0)
    monkeypatch.setattr(process_tuning, "give_back", lambda: calls.release() or True)
    with process_tuning.giving_back_memory(interval=0.001) as thread:
        assert thread is not None and thread.is_alive()
        for _ in range(3):  # the first call at entry, then one per interval
            assert calls.acquire(timeout=10)
    assert not thread.is_alive()


def test_giving_back_memory_starts_nothing_without_malloc_trim(monkeypatch) -> None:
    monkeypatch.setattr(process_tuning, "give_back", lambda: False)
    with process_tuning.giving_back_memory(interval=0.001) as thread:
        assert thread is None
