"""The daemon's glibc tuning: big blocks stay in mmap, so freeing them gives the memory back."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# In a fresh process: mallopt changes the whole process's allocator.
PROBE = textwrap.dedent(
    """
    import ctypes
    import sys

    from servicegroup.server import app

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

    tuned = app._bound_malloc() if sys.argv[1] == "tuned" else None
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


TRIM_PROBE = textwrap.dedent(
    """
    import ctypes
    import re

    from servicegroup.server import app

    def rss_mb():
        status = open("/proc/self/status").read()
        return int(re.search(r"VmRSS:\\s+(\\d+)", status).group(1)) / 1024

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    app._bound_malloc()
    # 64 MiB of 4 KiB blocks, every 16th kept: holes of 60 KiB inside the
    # heap, which free() cannot give back (only a heap's top can shrink).
    blocks = [libc.malloc(4096) for _ in range(16384)]
    for block in blocks:
        libc.memset(block, 1, 4096)
    for i, block in enumerate(blocks):
        if i % 16:
            libc.free(block)
    before = rss_mb()
    app._malloc_trim()()
    print(round(before - rss_mb()))
    """
)


def test_malloc_trim_gives_back_the_free_pages_inside_the_heap() -> None:
    out = subprocess.run(
        [sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, check=True
    ).stdout
    assert int(out) >= 40  # of the 60 MiB freed in holes
