"""Throwaway backend servers on free ports, for tests and the benchmark harness.

Each server is a real process (Debian's ZooKeeper jars, memcached) that a test
can kill -9 and restart on the same port, which is what fault tests need and
what a shared system service could never allow.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

# Admin URLs of the machine's database servers; override to point elsewhere.
POSTGRESQL_ADMIN = os.environ.get(
    "SG_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MYSQL_ADMIN = os.environ.get("SG_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/")
REDIS_URL = os.environ.get("SG_TEST_REDIS_URL", "redis://127.0.0.1:6379")

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


@contextlib.contextmanager
def scratch_database(
    admin_url: str, prefix: str = "sg_test", migrate: bool = True
) -> Iterator[str]:
    """A fresh database on a shared SQL server, dropped afterwards; migrated unless told not to.

    Raises ServerUnavailable when the server cannot create it.
    """
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    from servicegroup.db import migration
    from servicegroup.db.engine import make_engine

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    except sa.exc.SQLAlchemyError as exc:
        admin.dispose()
        raise ServerUnavailable(str(exc).strip().splitlines()[0]) from exc
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        if migrate:
            engine = make_engine(url)
            migration.upgrade(engine)
            engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if admin.dialect.name == "postgresql" else ""
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}{force}"))
        admin.dispose()


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

    def popen_options(self) -> dict:
        """Extra subprocess.Popen arguments (a server that must not run as root)."""
        return {}

    def start(self) -> Server:
        log = open(self.workdir / f"{self.name}.log", "ab")  # noqa: SIM115 - child owns it
        self.proc = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            **self.popen_options(),
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

    main_class = "org.apache.zookeeper.server.ZooKeeperServerMain"

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
            "4lw.commands.whitelist=*\n" + self.more_cfg(data)
        )
        return [
            java,
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-cp",
            f"/etc/zookeeper/conf:{self.jar}",
            f"-Dzookeeper.log.dir={self.workdir}",
            self.main_class,
            str(cfg),
        ]

    def more_cfg(self, data: Path) -> str:
        """zoo.cfg lines beyond a standalone server's."""
        return ""

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


class ZooKeeperEnsemble:
    """Three ZooKeeper servers in one quorum, on loopback ports; any one may be killed.

    Each member is a QuorumPeerMain with its own client, peer and election
    ports. tickTime 100 ms, as the standalone server, so an election after
    the leader's death takes a second or two, not tens.
    """

    size = 3

    def __init__(self) -> None:
        self.members = [ZooKeeperMember(i + 1, self) for i in range(self.size)]

    @property
    def hosts(self) -> list[str]:
        return [member.address for member in self.members]

    def servers_cfg(self) -> str:
        return "".join(
            f"server.{m.myid}=127.0.0.1:{m.peer_port}:{m.election_port}\n" for m in self.members
        )

    def start(self) -> ZooKeeperEnsemble:
        for member in self.members:
            member.launch()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            modes = [member.mode() for member in self.members]
            if modes.count("leader") == 1 and modes.count("follower") == self.size - 1:
                return self
            time.sleep(0.2)
        self.cleanup()
        raise ServerUnavailable(f"the ZooKeeper ensemble never formed a quorum: {modes}")

    def leader(self) -> ZooKeeperMember:
        for member in self.members:
            if member.mode() == "leader":
                return member
        raise AssertionError("no ZooKeeper member says it leads")

    def cleanup(self) -> None:
        for member in self.members:
            member.cleanup()


class ZooKeeperMember(ZooKeeperServer):
    name = "zookeeper-member"

    def __init__(self, myid: int, ensemble: ZooKeeperEnsemble) -> None:
        super().__init__()
        self.myid = myid
        self.ensemble = ensemble
        self.peer_port = free_port()
        self.election_port = free_port()

    main_class = "org.apache.zookeeper.server.quorum.QuorumPeerMain"

    def more_cfg(self, data: Path) -> str:
        (data / "myid").write_text(f"{self.myid}\n")
        return "initLimit=50\nsyncLimit=20\n" + self.ensemble.servers_cfg()

    def launch(self) -> None:
        """Start the process without waiting: a member answers only once a quorum exists."""
        log = open(self.workdir / f"{self.name}.log", "ab")  # noqa: SIM115 - child owns it
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        log.close()

    def mode(self) -> str | None:
        """'leader' or 'follower' once in the quorum; None before, or when dead."""
        for line in self.four_letter("srvr").splitlines():
            if line.startswith("Mode:"):
                return line.split(":", 1)[1].strip()
        return None


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


class PostgreSQLServer(Server):
    """A PostgreSQL of the test's own, from Debian's binaries, as an unprivileged user.

    The machine's PostgreSQL is shared and must never be stopped; this one a
    fault test may kill -9 and restart on the same port. The cluster is made
    once by initdb (trust auth, fsync off: a test cluster needs no
    durability across a machine crash, only across a process crash, which
    PostgreSQL's WAL gives anyway) and survives restarts, as a real one does.
    """

    name = "postgresql"
    user = "nobody"
    start_timeout = 30.0

    def __init__(self, workdir: str | None = None) -> None:
        super().__init__(workdir)
        self.bindir = _postgresql_bindir()
        self.datadir = self.workdir / "data"
        self.sockdir = self.workdir / "sock"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/postgres"

    def popen_options(self) -> dict:
        # setuid in the child rather than `runuser`: the Popen pid must be
        # the postmaster itself, so kill() really is a kill -9 of PostgreSQL.
        if os.geteuid() != 0:
            return {}
        pw = pwd.getpwnam(self.user)

        def drop() -> None:
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)

        return {"preexec_fn": drop, "env": {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}}

    def _initdb(self) -> None:
        if (self.datadir / "PG_VERSION").exists():
            return
        if self.bindir is None:
            raise ServerUnavailable(
                "PostgreSQL server binaries not found under /usr/lib/postgresql"
            )
        self.sockdir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(self.user)
            os.chmod(self.workdir, 0o700)
            for path in (self.workdir, self.sockdir):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        result = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                self.user,
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            capture_output=True,
            cwd=self.workdir,
            check=False,
            **self.popen_options(),
        )
        if result.returncode != 0:
            raise ServerUnavailable(f"initdb failed: {result.stderr.decode(errors='replace')}")

    def command(self) -> list[str]:
        self._initdb()
        assert self.bindir is not None
        return [
            str(self.bindir / "postgres"),
            "-D",
            str(self.datadir),
            "-p",
            str(self.port),
            "-h",
            "127.0.0.1",
            "-k",
            str(self.sockdir),
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=16MB",
        ]

    def ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            wait_port(self.port, max(0.1, deadline - time.monotonic()), self.proc)
            check = subprocess.run(
                [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                check=False,
            )
            if check.returncode == 0:
                return
            time.sleep(0.05)
        raise ServerUnavailable("PostgreSQL did not accept connections")

    def kill(self) -> None:
        """SIGKILL the postmaster; its backends notice and exit on their own."""
        proc = self.proc
        super().kill()
        if proc is not None:
            self._wait_backends_gone()

    def _wait_backends_gone(self) -> None:
        # A restart on the same port and data directory needs the killed
        # postmaster's children gone (shared memory still attached blocks it).
        pidfile = self.datadir / "postmaster.pid"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not _children_of_datadir(self.datadir):
                break
            time.sleep(0.05)
        pidfile.unlink(missing_ok=True)


def _postgresql_bindir() -> Path | None:
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def _children_of_datadir(datadir: Path) -> list[int]:
    """pids of postgres processes still running on `datadir` (after a SIGKILL of the postmaster)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ_cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"postgres" in cmdline and environ_cwd == str(datadir):
            found.append(int(entry.name))
    return found


class PrometheusServer(Server):
    """Debian's `prometheus`, scraping what its config says, with a throwaway TSDB.

    The config and the rule files are the caller's (write them to
    `workdir` before start()); storage lives in the workdir and goes with
    cleanup(). Ready once /-/ready answers 200: the rules are loaded then.
    """

    name = "prometheus"
    config_name = "prometheus.yml"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def command(self) -> list[str]:
        binary = shutil.which("prometheus")
        if binary is None:
            raise ServerUnavailable("prometheus is not installed (Debian package prometheus)")
        return [
            binary,
            f"--config.file={self.workdir / self.config_name}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address={self.address}",
            "--log.level=warn",
        ]

    def ready(self) -> None:
        import httpx

        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            wait_port(self.port, max(0.1, deadline - time.monotonic()), self.proc)
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.05)
        log = (self.workdir / f"{self.name}.log").read_text(errors="replace")
        raise ServerUnavailable(f"Prometheus did not become ready:\n{log}")


class RabbitMQServer(Server):
    """A RabbitMQ broker of the test's own, from Debian's `rabbitmq-server`.

    The machine may run its own broker (port 5672, node rabbit@HOST, epmd on
    4369); this one has its own node name, AMQP, distribution and epmd ports,
    and its own mnesia, log and config under the workdir, so a test can kill
    -9 it and start the same node again (its durable queues and persistent
    messages come back, as a real restart's do). RUNNING_UNDER_SYSTEMD makes
    the start script exec the VM, so the Popen pid is the broker itself.
    Ready once the AMQP port answers: the listener opens last in the boot.
    """

    name = "rabbitmq"
    start_timeout = 60.0
    script = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")

    def __init__(self, workdir: str | None = None) -> None:
        super().__init__(workdir)
        self.dist_port = free_port()
        self.epmd_port = free_port()

    @property
    def url(self) -> str:
        return f"rabbit://guest:guest@{self.address}/"

    def command(self) -> list[str]:
        if not self.script.exists():
            raise ServerUnavailable("rabbitmq-server is not installed (Debian package)")
        (self.workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {self.address}\nloopback_users = none\n"
        )
        (self.workdir / "enabled_plugins").write_text("[].\n")
        return [str(self.script)]

    def environment(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.workdir),  # its own Erlang cookie
            "RUNNING_UNDER_SYSTEMD": "1",
            "RABBITMQ_NODENAME": f"sgtest{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(self.workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.workdir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.workdir / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.workdir / "enabled_plugins"),
        }

    def popen_options(self) -> dict:
        return {"env": self.environment()}

    def cleanup(self) -> None:
        super().cleanup()
        epmd = shutil.which("epmd")
        if epmd is not None:  # the epmd our node started on its own port
            subprocess.run(
                [epmd, "-kill"],
                env=self.environment(),
                capture_output=True,
                timeout=10,
                check=False,
            )
