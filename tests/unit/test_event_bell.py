"""The daemon's Bell: a long-poll wakes when this process's sweeper writes events."""

from __future__ import annotations

import asyncio
import threading

from servicegroup.server.app import Bell


def test_ring_from_another_thread_wakes_every_waiter() -> None:
    bell = Bell()

    async def scenario() -> list[bool]:
        waiters = [asyncio.ensure_future(bell.wait(60)) for _ in range(3)]
        await asyncio.sleep(0)  # let them wait
        threading.Thread(target=bell.ring).start()
        return await asyncio.gather(*waiters)

    assert asyncio.run(scenario()) == [True, True, True]


def test_a_wait_without_ring_times_out_and_a_later_ring_is_not_remembered() -> None:
    bell = Bell()

    async def scenario() -> tuple[bool, bool]:
        first = await bell.wait(0.01)
        bell.ring()  # nobody waits: wakes nobody
        await asyncio.sleep(0.01)
        return first, await bell.wait(0.01)

    assert asyncio.run(scenario()) == (False, False)


def test_a_bell_survives_a_new_event_loop() -> None:
    bell = Bell()
    assert asyncio.run(bell.wait(0.01)) is False
    assert asyncio.run(bell.wait(0.01)) is False  # a future of the old loop would raise
