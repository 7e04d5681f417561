"""Run the real daemon as a subprocess, the way an operator would.

A real process, real sockets and real signals: what the in-process TestClient
cannot show (startup refusal, SIGTERM, uvicorn's own behaviour) shows here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(path: Path, db_url: str, port: int, **defaults: object) -> Path:
    lines = ["[DEFAULT]"]
    lines += [f"{key} = {value}" for key, value in defaults.items()]
    lines += ["[database]", f"connection = {db_url}", "[api]", "host = 127.0.0.1"]
    lines += [f"port = {port}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def config_text(url: str, port: int, options: dict[str, Any]) -> str:
    """A config file for a loopback daemon; options as ServiceGroup.from_options takes them."""
    groups: dict[str, dict[str, Any]] = {
        "DEFAULT": {},
        "database": {"connection": url},
        "api": {"host": "127.0.0.1", "port": port},
    }
    for key, value in options.items():
        group, _, name = key.rpartition("__")
        if isinstance(value, list):
            value = ",".join(value)
        groups.setdefault(group or "DEFAULT", {})[name] = value
    return "".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in opts.items())
        for group, opts in groups.items()
    )


class Daemon:
    """`python -m servicegroup.server --config-file F`, with its stderr kept in a file.

    `verify`: the daemon serves TLS, and this context (trusting its CA,
    with a client certificate if it asks for one) checks it is ready.
    """

    def __init__(
        self,
        config_file: Path,
        port: int,
        log_file: Path,
        argv: list[str] | None = None,
        *,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        self.config_file = config_file
        self.verify = verify
        self.url = f"{'http' if verify is None else 'https'}://127.0.0.1:{port}"
        self.log_file = log_file
        self.argv = argv or [
            sys.executable,
            "-m",
            "servicegroup.server",
            "--config-file",
            str(config_file),
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with open(self.log_file, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> Daemon:
        """Poll /healthz until it answers 200; fail with the daemon's log if it never does."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.TransportError):
                answer = httpx.get(f"{self.url}/healthz", timeout=1.0, verify=self.verify or True)
                if answer.status_code == 200:
                    return self
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready after {timeout}s:\n{self.log()}")

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        """Clean up whatever state the test left the process in."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")
