"""Group commit: heartbeats that arrive together go to the backend as one write.

At 100,000 services beating every 10 s the daemon takes 10,000 beats a
second. One write per beat pays a round trip and a thread hop per beat, and
the backend's per-statement cost per beat; that was the daemon's ceiling
(issue 18: 952-1,146 beats/s at 100,000). Here a beat joins a queue; a
writer thread takes everything queued and writes it as one batch
(ServiceGroup.heartbeat_many: one UPDATE, one set_many per memcached
server, one pipelined send to ZooKeeper), and beats that arrive during that
write make the next batch. Under light load a batch is one beat and costs
what a lone write did; under heavy load batches grow and the cost per beat
falls, as a database's own group commit does for its log.

The rules a caller can rely on:
    * a beat is answered only after the batch that holds it was written;
    * a batch that raised fails each of its beats with that error;
    * a beat that failed on its own (NotFound: a deleted service) fails
      alone, and its batch mates succeed.

Registrations go the same way (ServiceGroup.register_many: one
transaction, one INSERT and one event append for a whole batch), with a
result for each.

Usage::

    # write(keys) -> one answer per key, in order: its result, or the exception
    # it failed with. Keys are queued requests, so the same key may come twice.
    commit = GroupCommit(write)
    result = await commit.submit(key)   # on any event loop; raises that key's error
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

Key = TypeVar("Key")
Result = TypeVar("Result")

# Batches written at once. One keeps the classic shape (a batch collects
# while the previous one is written); two overlap one batch's Python with
# the other's round trip.
WRITERS = 2
# Beats per batch at most: bounds one statement, one send, one answer.
MAX_BATCH = 2000
# A writer thread with nothing to write for this long ends; the next beat
# starts one again. So an idle daemon (or a test's short-lived app) holds none.
IDLE_SECONDS = 5.0

Write = Callable[[list[Key]], Sequence[Result | BaseException]]
Answer = tuple["asyncio.Future[Any]", Any]


class GroupCommit(Generic[Key, Result]):
    """Coalesce submit()s from any event loop into batches written on a few threads."""

    def __init__(
        self,
        write: Write[Key, Result],
        writers: int = WRITERS,
        max_batch: int = MAX_BATCH,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self._write = write
        self._writers = writers
        self._max_batch = max_batch
        self._idle_seconds = idle_seconds
        self._queue: deque[tuple[Key, asyncio.Future[Result]]] = deque()
        self._cond = threading.Condition()
        self._threads = 0
        self._waiting = 0

    async def submit(self, key: Key) -> Result:
        """`key`'s answer, once the batch holding it was written; raises its error if it failed."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        with self._cond:
            self._queue.append((key, future))
            self._wake()
        return await future

    async def submit_many(self, keys: Sequence[Key]) -> list[Result | BaseException]:
        """Each key's answer or error, in order; queued at once, so they share a batch
        (up to max_batch) rather than racing a writer one by one."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Result]] = [loop.create_future() for _ in keys]
        with self._cond:
            self._queue.extend(zip(keys, futures, strict=True))
            self._wake()
        return await asyncio.gather(*futures, return_exceptions=True)

    def _wake(self) -> None:
        """A waiting writer, or a new one while there are fewer than `writers`; lock held."""
        if self._waiting:
            self._cond.notify()
        elif self._threads < self._writers:
            self._threads += 1
            threading.Thread(target=self._run, name="group-commit", daemon=True).start()

    @property
    def writers(self) -> int:
        """Writer threads alive now (for tests and /healthz-style curiosity)."""
        with self._cond:
            return self._threads

    def _run(self) -> None:
        """A writer: batch after batch; ends after idle_seconds with nothing queued."""
        while True:
            with self._cond:
                if not self._queue:
                    self._waiting += 1
                    self._cond.wait(self._idle_seconds)
                    self._waiting -= 1
                    if not self._queue:
                        self._threads -= 1
                        return
                count = min(len(self._queue), self._max_batch)
                batch = [self._queue.popleft() for _ in range(count)]
            try:
                answers = self._write([key for key, _ in batch])
                if len(answers) != len(batch):
                    raise RuntimeError(f"{len(answers)} answers for a batch of {len(batch)}")
            except Exception as exc:  # the whole batch failed: each request gets the error
                _settle([(future, exc) for _, future in batch])
            else:
                futures = [future for _, future in batch]
                _settle(list(zip(futures, answers, strict=True)))


def _settle(answers: list[Answer]) -> None:
    """Answer a batch's waiters with one wake-up per event loop, not one per beat."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Answer]] = {}
    for answer in answers:
        by_loop.setdefault(answer[0].get_loop(), []).append(answer)
    for loop, mine in by_loop.items():
        # RuntimeError: that loop is closed, so nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_answer, mine)


def _answer(answers: list[Answer]) -> None:
    for future, answer in answers:
        if future.done():  # the client went away and its request was cancelled
            continue
        if isinstance(answer, BaseException):
            future.set_exception(answer)
        else:
            future.set_result(answer)
