"""`servicegroup agent` as a real process watching a real child process.

Each case runs over both transports: through a real daemon subprocess
(HTTP, with an agent token from $SERVICEGROUP_TOKEN) and straight to the
database (the configured driver). States are read from the database with a
deadline, never timed. A long service_down_time (30 s) proves "down at once":
within the deadline only a leave can take the service down.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from servicegroup import ServiceGroup, ServiceStatus
from tests.functional.daemon import Daemon, free_port
from tests.functional.test_daemon import eventually, migrated_sqlite

SCRIPT = Path(sys.executable).parent / "servicegroup"
AGENT_TOKEN, ADMIN_TOKEN = "agent-e2e-7d41", "admin-e2e-93b0"
SHORT, LONG = 0.5, 30.0
INTERVAL = "0.05"
FAST, FAST_INTERVAL, FAST_DOWN_TIME = "svc-fast", 0.1, 2.0

pytestmark = pytest.mark.skipif(
    not SCRIPT.exists(), reason=f"console script not installed next to {sys.executable}"
)


@dataclass
class Backend:
    kind: str
    config: Path
    reader: ServiceGroup
    daemon: Daemon | None

    def agent_args(self) -> list[str]:
        if self.daemon is not None:
            return ["agent", "--daemon-url", self.daemon.url]
        return ["--config-file", str(self.config), "agent"]


def write_config(path: Path, db_url: str, port: int, down_time: float) -> Path:
    path.write_text(
        f"[DEFAULT]\nreport_interval = 0.1\nservice_down_time = {down_time}\n"
        f"[database]\nconnection = {db_url}\n"
        f"[api]\nhost = 127.0.0.1\nport = {port}\n"
        f"agent_tokens = {AGENT_TOKEN}\nadmin_tokens = {ADMIN_TOKEN}\n"
        # A binary that must beat faster than the agent's default (10 s) to stay up.
        f"[binaries]\nreport_interval = {FAST}:{FAST_INTERVAL}\n"
        f"service_down_time = {FAST}:{FAST_DOWN_TIME}\n"
    )
    return path


@pytest.fixture(scope="module")
def backends(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str, float], Backend]]:
    made: dict[tuple[str, float], Backend] = {}

    def get(kind: str, down_time: float) -> Backend:
        if (kind, down_time) not in made:
            tmp = tmp_path_factory.mktemp(kind)
            port = free_port()
            config = write_config(
                tmp / "sg.conf", migrated_sqlite(tmp / "sg.sqlite"), port, down_time
            )
            daemon = None
            if kind == "http":
                daemon = Daemon(config, port, tmp / "daemon.log").start().wait_ready()
            reader = ServiceGroup.from_options(str(config))
            made[(kind, down_time)] = Backend(kind, config, reader, daemon)
        return made[(kind, down_time)]

    yield get
    for backend in made.values():
        backend.reader.close()
        if backend.daemon is not None:
            backend.daemon.stop()
            log = backend.daemon.log()
            assert "Traceback" not in log, log
            assert AGENT_TOKEN not in log and ADMIN_TOKEN not in log


@pytest.fixture(params=["http", "direct"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


class Agent:
    """`servicegroup agent` for binary `binary`; `interval` None: no --interval."""

    def __init__(
        self,
        backend: Backend,
        tmp: Path,
        *args: str,
        token: str = AGENT_TOKEN,
        binary: str = "svc",
        interval: str | None = INTERVAL,
    ) -> None:
        self.backend = backend
        self.binary = binary
        self.host = f"host-{uuid.uuid4().hex[:8]}"
        self.log_file = tmp / f"agent-{self.host}.log"
        argv = [str(SCRIPT), *backend.agent_args(), "--host", self.host, "--binary", binary]
        if interval is not None:
            argv += ["--interval", interval]
        # A private HOME: no developer config file may leak into the agent.
        env = {**os.environ, "HOME": str(tmp), "SERVICEGROUP_TOKEN": token}
        with open(self.log_file, "wb") as log:
            self.proc = subprocess.Popen([*argv, *args], stdout=log, stderr=log, env=env)

    def status(self) -> ServiceStatus | None:
        found = self.backend.reader.get_all(host=self.host, binary=self.binary)
        return found[0] if found else None

    def state(self) -> str | None:
        status = self.status()
        return None if status is None else status.state.value

    def wait_state(self, state: str) -> None:
        def reached() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}:\n{self.log()}")
            return self.state() == state

        eventually(reached, f"service {state}; agent log:\n{self.log()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=20)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        agent.kill()


@contextlib.contextmanager
def sleeper(pidfile: Path) -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(["sleep", "600"])
    pidfile.write_text(f"{child.pid}\n")
    try:
        yield child
    finally:
        child.kill()
        child.wait()  # reaped, or kill(pid, 0) would still find the zombie


def test_pidfile_child_dies_down_restarts_up(
    kind: str, backends: Callable[[str, float], Backend], tmp_path: Path, agents: list[Agent]
) -> None:
    backend = backends(kind, SHORT)
    pidfile = tmp_path / "svc.pid"
    with sleeper(pidfile):
        agent = Agent(backend, tmp_path, "--pidfile", str(pidfile))
        agents.append(agent)
        agent.wait_state("up")
    agent.wait_state("down")  # the child is gone: no more beats, down after down time
    with sleeper(pidfile):
        agent.wait_state("up")
        assert agent.stop() == 0, agent.log()
    log = agent.log()
    assert log.count("check failing") == 1, log
    assert log.count("check passing again") == 1, log
    assert "Traceback" not in log
    assert AGENT_TOKEN not in log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_leaves_at_once_and_exits_0(
    kind: str,
    backends: Callable[[str, float], Backend],
    tmp_path: Path,
    agents: list[Agent],
    sig: signal.Signals,
) -> None:
    backend = backends(kind, LONG)
    with sleeper(tmp_path / "svc.pid"):
        agent = Agent(backend, tmp_path, "--pidfile", str(tmp_path / "svc.pid"))
        agents.append(agent)
        agent.wait_state("up")
        assert agent.stop(sig) == 0, agent.log()
    # Read once, not polled: with a 30 s down time only the leave makes it down.
    assert agent.state() == "down", agent.log()
    assert "Traceback" not in agent.log()


def test_check_command_with_leave_on_failure_is_down_at_once(
    kind: str, backends: Callable[[str, float], Backend], tmp_path: Path, agents: list[Agent]
) -> None:
    backend = backends(kind, LONG)
    flag = tmp_path / "healthy"
    flag.touch()
    agent = Agent(backend, tmp_path, "--check", f"test -e '{flag}'", "--leave-on-failure")
    agents.append(agent)
    agent.wait_state("up")
    flag.unlink()
    agent.wait_state("down")  # within the deadline, far below the 30 s down time
    flag.touch()
    agent.wait_state("up")
    assert agent.stop() == 0
    assert agent.log().count("left (down now)") == 2, agent.log()


def test_http_check_follows_the_url(
    kind: str,
    backends: Callable[[str, float], Backend],
    tmp_path: Path,
    agents: list[Agent],
    status_server: tuple[str, list[int]],
) -> None:
    url, status = status_server
    agent = Agent(backends(kind, SHORT), tmp_path, "--http-check", url, "--check-timeout", "2")
    agents.append(agent)
    agent.wait_state("up")
    status[0] = 503
    agent.wait_state("down")
    status[0] = 200
    agent.wait_state("up")
    assert agent.stop() == 0
    assert "answered 503" in agent.log()


def test_a_wrong_token_is_one_line_and_exit_1(
    backends: Callable[[str, float], Backend], tmp_path: Path, agents: list[Agent]
) -> None:
    agent = Agent(backends("http", SHORT), tmp_path, "--check", "true", token="wrong-token-1")
    agents.append(agent)
    assert agent.proc.wait(timeout=20) == 1
    lines = agent.log().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("servicegroup: error: "), lines
    assert "wrong-token-1" not in lines[0]


def test_daemon_outages_are_retried_and_logged_once(
    tmp_path: Path, agents: list[Agent], backends: Callable[[str, float], Backend]
) -> None:
    """Registration waits for the daemon; a daemon restart is one warning and one recovery."""
    port = free_port()
    config = write_config(
        tmp_path / "sg.conf", migrated_sqlite(tmp_path / "sg.sqlite"), port, SHORT
    )
    daemon = Daemon(config, port, tmp_path / "daemon.log")
    with ServiceGroup.from_options(str(config)) as reader:
        backend = Backend("http", config, reader, daemon)
        agent = Agent(backend, tmp_path, "--check", "true")
        agents.append(agent)
        eventually(lambda: "cannot register yet" in agent.log(), "a first failed register")
        try:
            daemon.start().wait_ready()
            agent.wait_state("up")
            daemon.stop()
            agent.wait_state("down")
            eventually(lambda: "lost connection" in agent.log(), "the outage logged")
            daemon.start().wait_ready()
            agent.wait_state("up")
            eventually(lambda: "recovered connection" in agent.log(), "the recovery logged")
            assert agent.stop() == 0
        finally:
            daemon.stop()
    log = agent.log()
    for line in ("cannot register yet", "lost connection", "recovered connection"):
        assert log.count(line) == 1, log
    assert "Traceback" not in log


def test_without_interval_the_agent_beats_at_its_binarys_report_interval(
    kind: str, backends: Callable[[str, float], Backend], tmp_path: Path, agents: list[Agent]
) -> None:
    """[binaries] gives svc-fast 0.1 s beats and 2 s of down time. The agent's own default,
    10 s, would leave it down for 8 s of every 10: it must stay up, beat after beat."""
    backend = backends(kind, LONG)
    agent = Agent(backend, tmp_path, "--check", "true", binary=FAST, interval=None)
    agents.append(agent)
    agent.wait_state("up")
    first = agent.status()
    assert first is not None

    def twenty_more_beats_all_up() -> bool:
        status = agent.status()
        assert status is not None and status.state.value == "up", (status, agent.log())
        return status.service.report_count >= first.service.report_count + 20

    eventually(twenty_more_beats_all_up, f"20 beats of the agent; log:\n{agent.log()}")
    # Never down in between: a daemon's sweeper would have written the event.
    events = backend.reader.events(binary=FAST, host=agent.host).events
    assert [event.cause for event in events[:1]] == ["registered"], events
    assert {event.state for event in events[1:]} <= {"up"}, events
    assert agent.stop() == 0
    log = agent.log()
    assert f"checking every {FAST_INTERVAL:g}s (the report_interval of binary '{FAST}')" in log
    assert "too slow" not in log and "Traceback" not in log


def test_an_explicit_interval_too_slow_for_the_binary_wins_with_one_warning(
    kind: str, backends: Callable[[str, float], Backend], tmp_path: Path, agents: list[Agent]
) -> None:
    backend = backends(kind, LONG)
    agent = Agent(backend, tmp_path, "--check", "true", binary=FAST, interval="1")
    agents.append(agent)
    agent.wait_state("up")  # its first beat, at registration
    eventually(lambda: "started" in agent.log(), "the agent's start line")
    assert agent.stop() == 0
    log = agent.log()
    assert log.count(f"--interval 1s is too slow for binary '{FAST}'") == 1, log
    assert "checking every 1s (--interval)" in log
