"""server/process_tuning.py: big blocks stay in mmap, so freeing them gives the memory back."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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
