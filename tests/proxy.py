"""A TCP proxy a fault test puts between a driver and its backend.

Killing a server shows only one kind of failure: a refused connection, at
once. Networks fail worse: connections reset mid-stream, or packets simply
stop (a black hole), which is where a client without timeouts hangs for
ever. The proxy plays each of those on demand:

- ``passthrough()``: forward both ways (also ends a black hole: held
  connections resume, as after a healed partition);
- ``refuse()``: stop listening (new connections get ECONNREFUSED) and reset
  every open one;
- ``reset()``: RST every open connection (SO_LINGER 0), keep accepting;
- ``blackhole()``: keep accepting, but forward nothing either way: callers
  see connections that never answer.

Plain threads and blocking sockets with short select() timeouts, so every
mode change takes effect within POLL seconds and close() always returns.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time

POLL = 0.05
LINGER_RESET = struct.pack("ii", 1, 0)


def _rst(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a RST, not a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    with contextlib.suppress(OSError):
        sock.close()


class _Pair:
    """One client connection and, once forwarding, its upstream connection."""

    def __init__(self, proxy: Proxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: socket.socket | None = None
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, name="proxy-conn", daemon=True)

    def reset(self) -> None:
        self.closed.set()
        _rst(self.client)
        if self.upstream is not None:
            _rst(self.upstream)

    def _run(self) -> None:
        try:
            self._pump()
        except OSError:
            pass
        finally:
            self.closed.set()
            with contextlib.suppress(OSError):
                self.client.close()
            if self.upstream is not None:
                with contextlib.suppress(OSError):
                    self.upstream.close()
            self.proxy._forget(self)

    def _pump(self) -> None:
        while not self.closed.is_set():
            if self.proxy.mode != "pass":
                # Black hole: read nothing, send nothing; the kernel buffers
                # fill and the caller waits, as behind a dead link.
                time.sleep(POLL)
                continue
            if self.upstream is None:
                self.upstream = socket.create_connection(self.proxy.target, timeout=5)
                self.upstream.settimeout(None)
            readable, _, _ = select.select([self.client, self.upstream], [], [], POLL)
            for sock in readable:
                if self.proxy.mode != "pass":
                    break
                data = sock.recv(65536)
                other = self.upstream if sock is self.client else self.client
                if not data:
                    # Half-close the other way, then end: backends close, clients close.
                    return
                other.sendall(data)


class Proxy:
    """Listens on 127.0.0.1:<port> and forwards to `target` (host, port)."""

    def __init__(self, target_host: str, target_port: int, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.mode = "pass"
        self._pairs: set[_Pair] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self.port = port or 0
        self._listen()
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept_loop, name="proxy", daemon=True)
        self._thread.start()

    @classmethod
    def to(cls, address: str) -> Proxy:
        host, _, port = address.rpartition(":")
        return cls(host, int(port))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- modes -------------------------------------------------------------------

    def passthrough(self) -> None:
        self.mode = "pass"
        if self._listener is None:
            self._listen()

    def blackhole(self) -> None:
        self.mode = "blackhole"
        if self._listener is None:
            self._listen()

    def reset(self) -> None:
        for pair in self._snapshot():
            pair.reset()

    def refuse(self) -> None:
        self.mode = "refuse"
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self.reset()

    def close(self) -> None:
        self._stop.set()
        self.refuse()
        self._thread.join(5)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connections(self) -> int:
        return len(self._snapshot())

    # -- internals -------------------------------------------------------------

    def _listen(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        sock.settimeout(POLL)
        self.port = sock.getsockname()[1]
        self._listener = sock

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            listener = self._listener
            if listener is None:
                time.sleep(POLL)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            client.settimeout(None)
            pair = _Pair(self, client)
            with self._lock:
                self._pairs.add(pair)
                self.accepted += 1
            pair.thread.start()

    def _forget(self, pair: _Pair) -> None:
        with self._lock:
            self._pairs.discard(pair)

    def _snapshot(self) -> list[_Pair]:
        with self._lock:
            return list(self._pairs)
