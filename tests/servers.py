"""Throwaway backend servers on free ports, for tests and the benchmark harness.

Each server is a real process (Debian's ZooKeeper jars, memcached) that a test
can kill -9 and restart on the same port, which is what fault tests need and
what a shared system service could never allow.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


class ServerUnavailable(RuntimeError):
    """The server binary is missing or did not come up; tests fail in CI, skip elsewhere."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerUnavailable(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise ServerUnavailable(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class Server:
    """A child process bound to one port, restartable on that same port."""

    name = "server"
    start_timeout = 15.0

    def __init__(self, workdir: str | None = None) -> None:
        self.port = free_port()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"sg-{self.name}-"))
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> None:
        wait_port(self.port, self.start_timeout, self.proc)

    def start(self) -> Server:
        log = open(self.workdir / f"{self.name}.log", "ab")  # noqa: SIM115 - child owns it
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        log.close()
        try:
            self.ready()
        except ServerUnavailable:
            self.kill()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL: the crash case, nothing flushed, nothing said goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


class ZooKeeperServer(Server):
    """A standalone ZooKeeper from Debian's `zookeeper` package.

    tickTime is 100 ms so sessions may be as short as 200 ms: tests can watch
    an expiry happen in well under a second.
    """

    name = "zookeeper"
    jar = "/usr/share/java/zookeeper.jar"

    def command(self) -> list[str]:
        java = shutil.which("java")
        if java is None or not os.path.exists(self.jar):
            raise ServerUnavailable("ZooKeeper needs java and Debian's zookeeper package")
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        cfg = self.workdir / "zoo.cfg"
        cfg.write_text(
            "tickTime=100\n"
            f"dataDir={data}\n"
            f"clientPort={self.port}\n"
            "clientPortAddress=127.0.0.1\n"
            "minSessionTimeout=200\n"
            "maxSessionTimeout=60000\n"
            "admin.enableServer=false\n"
            "4lw.commands.whitelist=*\n"
        )
        return [
            java,
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-cp",
            f"/etc/zookeeper/conf:{self.jar}",
            f"-Dzookeeper.log.dir={self.workdir}",
            "org.apache.zookeeper.server.ZooKeeperServerMain",
            str(cfg),
        ]

    def ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            wait_port(self.port, max(0.1, deadline - time.monotonic()), self.proc)
            if self.four_letter("ruok") == "imok":
                return
            time.sleep(0.1)
        raise ServerUnavailable("ZooKeeper did not answer ruok")

    def four_letter(self, word: str) -> str:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(word.encode())
                chunks = []
                while chunk := sock.recv(4096):
                    chunks.append(chunk)
            return b"".join(chunks).decode(errors="replace")
        except OSError:
            return ""


class MemcachedServer(Server):
    """Debian's memcached; a restart loses every key, as a real restart does."""

    name = "memcached"

    def command(self) -> list[str]:
        binary = shutil.which("memcached")
        if binary is None:
            raise ServerUnavailable("memcached is not installed (Debian package memcached)")
        cmd = [binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "64"]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]
        return cmd
