"""Group commit: beats that arrive during a write go out together in the next one."""

from __future__ import annotations

import asyncio
import itertools
import threading

import pytest

from servicegroup.exceptions import BackendError, NotFound
from servicegroup.server.group_commit import GroupCommit
from tests.helpers import wait_for


class Recorder:
    """A write that records its batches; the first one waits until released."""

    def __init__(self, fail: dict[str, BaseException] | None = None) -> None:
        self.batches: list[list[str]] = []
        self.first_started = threading.Event()
        self.release = threading.Event()
        self.fail = fail or {}

    def __call__(self, keys: list[str]) -> list[BaseException | None]:
        self.batches.append(list(keys))
        if len(self.batches) == 1:
            self.first_started.set()
            assert self.release.wait(10)
        return [self.fail.get(key) for key in keys]


async def _first_blocks_then(commit: GroupCommit[str, None], write: Recorder, keys: list[str]):
    """Submit 'first', wait until its write holds the writer, then submit `keys` meanwhile."""
    first = asyncio.ensure_future(commit.submit("first"))
    await asyncio.to_thread(write.first_started.wait, 10)
    rest = [asyncio.ensure_future(commit.submit(key)) for key in keys]
    await asyncio.sleep(0.05)  # every submit has queued behind the write in flight
    write.release.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_beats_queued_during_a_write_go_out_as_one_batch() -> None:
    write = Recorder()
    commit = GroupCommit(write, writers=1)
    keys = [f"k{i}" for i in range(50)]
    results = asyncio.run(_first_blocks_then(commit, write, keys))
    assert results == [None] * 51
    assert write.batches == [["first"], keys]


def test_a_failed_beat_fails_alone_and_its_batch_mates_succeed() -> None:
    gone = NotFound("service", "k3")
    write = Recorder(fail={"k3": gone})
    commit = GroupCommit(write, writers=1)
    results = asyncio.run(_first_blocks_then(commit, write, ["k1", "k2", "k3", "k4"]))
    assert results == [None, None, None, gone, None]
    assert write.batches[1] == ["k1", "k2", "k3", "k4"]


def test_a_batch_that_raises_fails_every_beat_in_it() -> None:
    calls: list[list[str]] = []

    def outage(keys: list[str]) -> list[BaseException | None]:
        calls.append(list(keys))
        raise BackendError("database", "injected outage")

    commit = GroupCommit(outage)

    async def beat_all() -> list[object]:
        jobs = [commit.submit(f"k{i}") for i in range(10)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(beat_all())
    assert len(results) == 10
    assert all(isinstance(r, BackendError) and r.detail == "injected outage" for r in results)
    assert sorted(key for batch in calls for key in batch) == sorted(f"k{i}" for i in range(10))


def test_batches_are_bounded() -> None:
    write = Recorder()
    commit = GroupCommit(write, writers=1, max_batch=7)
    results = asyncio.run(_first_blocks_then(commit, write, [f"k{i}" for i in range(20)]))
    assert results == [None] * 21
    assert [len(batch) for batch in write.batches] == [1, 7, 7, 6]


def test_a_waiter_that_went_away_does_not_stop_the_others() -> None:
    write = Recorder()
    commit = GroupCommit(write, writers=1)

    async def scenario() -> list[object]:
        first = asyncio.ensure_future(commit.submit("first"))
        await asyncio.to_thread(write.first_started.wait, 10)
        leaver = asyncio.ensure_future(commit.submit("leaver"))
        stayer = asyncio.ensure_future(commit.submit("stayer"))
        await asyncio.sleep(0.05)
        leaver.cancel()  # a client that disconnected
        write.release.set()
        return await asyncio.gather(first, leaver, stayer, return_exceptions=True)

    first, leaver, stayer = asyncio.run(scenario())
    assert first is None and stayer is None
    assert isinstance(leaver, asyncio.CancelledError)
    assert write.batches[1] == ["leaver", "stayer"]  # written all the same: harmless


def test_writers_end_when_idle_and_come_back() -> None:
    batches: list[list[str]] = []

    def write(keys: list[str]) -> list[BaseException | None]:
        batches.append(list(keys))
        return [None] * len(keys)

    commit = GroupCommit(write, writers=2, idle_seconds=0.05)
    asyncio.run(commit.submit("a"))
    assert commit.writers >= 1
    wait_for(lambda: commit.writers == 0, "the idle writer to end")
    asyncio.run(commit.submit("b"))
    assert batches == [["a"], ["b"]]


@pytest.mark.parametrize("writers", [1, 2, 4])
def test_every_beat_is_written_exactly_once_under_load(writers: int) -> None:
    seen: list[str] = []
    lock = threading.Lock()

    def write(keys: list[str]) -> list[BaseException | None]:
        with lock:
            seen.extend(keys)
        return [None] * len(keys)

    commit = GroupCommit(write, writers=writers)

    async def flood() -> None:
        await asyncio.gather(*(commit.submit(f"k{i}") for i in range(2000)))

    asyncio.run(flood())
    assert sorted(seen) == sorted(f"k{i}" for i in range(2000))
    with lock:
        assert len(seen) == 2000


def test_each_request_gets_its_own_answer_in_order_duplicates_included() -> None:
    served = itertools.count()

    def write(keys: list[str]) -> list[object]:
        return [f"{key}#{next(served)}" for key in keys]

    commit: GroupCommit[str, object] = GroupCommit(write, writers=1)

    async def ask() -> list[object]:
        return await asyncio.gather(*(commit.submit(key) for key in ["a", "b", "a"]))

    answers = asyncio.run(ask())
    # Answers follow queue order; the same key twice is two requests, two answers.
    assert sorted(str(a).split("#")[0] for a in answers) == ["a", "a", "b"]
    assert len(set(answers)) == 3


def test_a_write_that_answers_the_wrong_count_fails_the_batch() -> None:
    commit: GroupCommit[str, None] = GroupCommit(lambda keys: [], writers=1)
    with pytest.raises(RuntimeError, match="0 answers for a batch of 1"):
        asyncio.run(commit.submit("a"))


def test_submit_many_queues_its_keys_at_once_so_they_share_a_batch() -> None:
    gone = NotFound("service", "m2")
    write = Recorder(fail={"m2": gone})
    write.release.set()  # no first batch to hold: the keys alone decide
    commit = GroupCommit(write, writers=1)
    keys = [f"m{i}" for i in range(40)]
    results = asyncio.run(commit.submit_many(keys))
    assert results == [gone if key == "m2" else None for key in keys]
    assert write.batches == [keys]
