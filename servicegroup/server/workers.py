"""Several daemon processes on one port: `[api] workers`.

One daemon process is bound by the GIL to about one core. With `workers = N`
the command forks N daemons, each a whole `servicegroup serve` (its own
ServiceGroup, sweeper and connections), each listening on its own socket
bound to the same address with SO_REUSEPORT, so the kernel spreads new
connections over them. They coordinate through nothing but what separate
hosts use: the records database and the sweeper lease, so exactly one of
them sweeps.

This process only supervises: it forwards SIGTERM and SIGINT to the
workers (and SIGHUP, which makes each read its token files again without
stopping: token_rotation.py), starts a new one when a worker dies of something other than a
stop (not when it fails within STARTUP_SECONDS: a daemon that cannot start
would only fail again), and exits with the worst exit code.

Usage::

    code = supervise(3, "127.0.0.1", 8797, run)   # run(sock) -> exit code, in each worker
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable

LOG = logging.getLogger(__name__)

# A worker that exits within this many seconds of its start is not restarted.
STARTUP_SECONDS = 5.0
RESTART_DELAY = 1.0
BACKLOG = 2048  # uvicorn's default


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port) that other processes may bind too."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(BACKLOG)
    return sock


def supervise(workers: int, host: str, port: int, run: Callable[[socket.socket], int]) -> int:
    """Fork `workers` processes, each calling run() with its own SO_REUSEPORT socket."""
    started: dict[int, float] = {}
    stopping = False

    def start() -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                # Not SIG_DFL, which would end the worker: run() takes SIGHUP over when
                # it can act on it. One landing before this line runs the inherited
                # forward() on this copy of `started`: its siblings reload, no harm.
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                code = run(reuse_port_socket(host, port))
            except BaseException:
                LOG.exception("worker failed")
            finally:
                os._exit(code)
        started[pid] = time.monotonic()

    def stop(sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        forward(sig, _frame)

    def forward(sig: int, _frame: object) -> None:
        for pid in list(started):
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.kill(pid, sig)

    for _ in range(workers):
        start()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, forward)
    LOG.info("servicegroup: %d workers on %s:%s (pids %s)", workers, host, port, list(started))
    worst = 0
    try:
        while started:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            born = started.pop(pid, None)
            if born is None:
                continue
            code = os.waitstatus_to_exitcode(status)  # -N: killed by signal N
            if code > 0 or (code < 0 and not stopping):
                worst = max(worst, code if code > 0 else 1)
            if stopping or code == 0:
                continue
            if time.monotonic() - born < STARTUP_SECONDS:
                LOG.error("worker %d failed at start (exit %d); stopping the others", pid, code)
                stop(signal.SIGTERM, None)
                continue
            LOG.error("worker %d exited with %d; starting another", pid, code)
            time.sleep(RESTART_DELAY)
            if not stopping:
                start()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return worst
