"""Hooks: the leader's one way of running operator code, for events and recovery alike.

A hook is a command that reads a JSON document on stdin (or, for claim
recovery, a Python callable registered as a `servicegroup.recovery` entry
point). `HookRunner` is the one place that runs one, under a timeout, and
turns whatever happened into an `Outcome`; event hooks and recovery hooks
differ only in what is done around it:

- event hooks (`[events] hooks`) are best effort and must never slow a
  sweep, so each command gets a `HookQueue`: its own bounded queue and
  worker thread, dropping (and counting) what it cannot keep up with;
- recovery hooks (`[claims] recovery_hooks`) are retried by the recovery
  pass until they succeed, so their outcome is recorded (leader/recovery.py).

Usage::

    runner = HookRunner({"page": "/usr/local/bin/page-oncall"}, timeout=10.0)
    outcome = runner.run("page", {"id": 7, "state": "down"})
    if not outcome.ok:
        print(outcome.result, outcome.error)
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import shlex
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

LOG = logging.getLogger(__name__)

ENTRY_POINTS = "servicegroup.recovery"
QUEUE_SIZE = 1000

HookCallable = Callable[[dict[str, Any]], object]


@dataclass(frozen=True, slots=True)
class Outcome:
    result: str  # succeeded | failed | timed_out
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.result == "succeeded"


def entry_point(name: str) -> HookCallable | None:
    """The callable registered as `servicegroup.recovery` entry point `name`, if any."""
    for ep in entry_points(group=ENTRY_POINTS, name=name):
        func: HookCallable = ep.load()
        return func
    return None


class HookRunner:
    """Runs a named hook with a JSON payload: a command (on stdin) or an entry point.

    A name in `commands` is a command line (split once, no shell); any other
    name is looked up as an entry point at each run, so a package installed
    after start-up is found.
    """

    def __init__(self, commands: Mapping[str, str], timeout: float) -> None:
        self.commands = dict(commands)
        self.timeout = timeout
        self._argv = {name: shlex.split(command) for name, command in commands.items()}

    def run(self, name: str, payload: dict[str, Any]) -> Outcome:
        argv = self._argv.get(name)
        if argv is not None:
            return self._command(argv, payload)
        func = entry_point(name)
        if func is None:
            return Outcome("failed", f"no hook {name!r}")
        return self._callable(func, payload)

    def _command(self, argv: list[str], payload: dict[str, Any]) -> Outcome:
        try:
            result = subprocess.run(
                argv,
                input=json.dumps(payload).encode(),
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Outcome("timed_out", f"killed after {self.timeout:g}s")
        except OSError as exc:
            return Outcome("failed", str(exc))
        if result.returncode != 0:
            tail = result.stderr.decode(errors="replace").strip().splitlines()[-1:]
            return Outcome("failed", f"exit {result.returncode} {' '.join(tail)}".strip())
        return Outcome("succeeded")

    def _callable(self, func: HookCallable, payload: dict[str, Any]) -> Outcome:
        """On its own thread, so a timeout can be told; a timed-out call runs on, but
        under an epoch the next attempt makes stale."""
        done: dict[str, BaseException | None] = {}

        def call() -> None:
            try:
                func(payload)
                done["error"] = None
            except BaseException as exc:
                done["error"] = exc

        thread = threading.Thread(target=call, name="recovery hook", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if "error" not in done:
            return Outcome("timed_out", f"still running after {self.timeout:g}s")
        error = done["error"]
        if error is not None:
            return Outcome("failed", f"{type(error).__name__}: {error}")
        return Outcome("succeeded")


class HookQueue:
    """One event hook command with its own bounded queue and worker thread.

    Separate workers mean a slow or hanging hook delays nobody but itself;
    the bounded queue means it cannot eat memory either: a full queue drops
    the event and counts it.
    """

    def __init__(self, command: str, runner: HookRunner) -> None:
        self.command = command
        self.runner = runner
        self.runs = 0
        self.failures = 0
        self.dropped = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE_SIZE)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._work, name=f"hook {command}", daemon=True)
        self._thread.start()

    def submit(self, event: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            LOG.warning("hook %r is behind; dropped event %s", self.command, event.get("id"))

    def close(self) -> None:
        """Stop after the current run; queued events are dropped (hooks are best effort).

        Waiting for the queue to drain could take queue size x timeout.
        """
        self._closed.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _work(self) -> None:
        while not self._closed.is_set():
            try:
                event = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if event is None or self._closed.is_set():
                return
            self.run(event)

    def run(self, event: dict[str, Any]) -> bool:
        self.runs += 1
        outcome = self.runner.run(self.command, event)
        if not outcome.ok:
            self.failures += 1
            LOG.warning(
                "hook %r failed on event %s: %s", self.command, event.get("id"), outcome.error
            )
        return outcome.ok


class EventHooks:
    """`[events] hooks`: every command gets every event, each at its own pace."""

    def __init__(self, commands: list[str], timeout: float) -> None:
        wanted = [command for command in commands if command.strip()]
        runner = HookRunner({command: command for command in wanted}, timeout)
        self.queues = [HookQueue(command, runner) for command in wanted]

    def __bool__(self) -> bool:
        return bool(self.queues)

    def submit(self, event: dict[str, Any]) -> None:
        for hook in self.queues:
            hook.submit(event)

    def close(self) -> None:
        for hook in self.queues:
            hook.close()


def log_hook(claim: dict[str, Any]) -> None:
    """The built-in `log` recovery hook: record the hand-off in the log, and succeed.

    For claims whose work needs nothing undone, where someone should still see
    that it was interrupted.
    """
    LOG.warning(
        "recovered %s %s (%s by service %s, epoch %s)",
        claim["resource_type"],
        claim["resource_id"],
        claim["operation"],
        claim["owner"],
        claim["epoch"],
    )
