"""gcpause.py: the collector is paused for a block, nested or not, and left as it was."""

from __future__ import annotations

import gc

from servicegroup import gcpause


def test_gc_pause_nests_and_restores() -> None:
    assert gc.isenabled()
    with gcpause.paused():
        assert not gc.isenabled()
        with gcpause.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gcpause.paused():
            pass
        assert not gc.isenabled()  # someone else turned it off: left off
    finally:
        gc.enable()
