"""Fixtures shared by every test: real SQL databases and real backend servers.

A backend that is missing fails the test when CI=true and skips it elsewhere,
so CI can never go green on a suite that did not run.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from servicegroup import ServiceGroup
from servicegroup.db import migration
from servicegroup.db.engine import make_engine
from servicegroup.db.models import Base
from tests.proxy import Proxy
from tests.servers import (
    IN_CI,
    MYSQL_ADMIN,
    POSTGRESQL_ADMIN,
    REDIS_URL,
    MemcachedServer,
    PostgreSQLServer,
    RabbitMQServer,
    Server,
    ServerUnavailable,
    ZooKeeperServer,
    scratch_database,
)

SQL_DIALECTS = ("sqlite", "postgresql", "mysql")


def unavailable(what: str, why: object) -> None:
    message = f"{what} is not available: {why}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing backend fails the run)", pytrace=False)
    pytest.skip(message)


def _scratch_database(admin_url: str, what: str) -> Iterator[str]:
    """A fresh database on a shared server, migrated once, dropped afterwards."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(scratch_database(admin_url))
        except ServerUnavailable as exc:
            unavailable(what, exc)
        yield url


@pytest.fixture(scope="session")
def postgresql_db() -> Iterator[str]:
    yield from _scratch_database(POSTGRESQL_ADMIN, "PostgreSQL")


@pytest.fixture(scope="session")
def mysql_db() -> Iterator[str]:
    yield from _scratch_database(MYSQL_ADMIN, "MySQL/MariaDB")


def empty_tables(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    engine.dispose()


def sqlite_db(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'servicegroup.sqlite'}"
    engine = make_engine(url)
    migration.upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(params=SQL_DIALECTS)
def sql_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A migrated, empty database on each dialect in turn."""
    if request.param == "sqlite":
        return sqlite_db(tmp_path)
    url = request.getfixturevalue(f"{request.param}_db")
    empty_tables(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return sqlite_db(tmp_path)


@pytest.fixture
def make_group() -> Iterator[Callable[..., ServiceGroup]]:
    """Build ServiceGroups from keyword options and close them all at the end."""
    groups: list[ServiceGroup] = []

    def factory(url: str, **options: Any) -> ServiceGroup:
        options.setdefault("report_interval", 0.05)
        options.setdefault("service_down_time", 0.5)
        group = ServiceGroup.from_options(database__connection=url, **options)
        groups.append(group)
        return group

    yield factory
    for group in groups:
        group.close()


def _server(cls: type[Server]) -> Iterator[Server]:
    server = cls()
    try:
        server.start()
    except ServerUnavailable as exc:
        server.cleanup()
        unavailable(cls.name, exc)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def zookeeper_server() -> Iterator[ZooKeeperServer]:
    """One ZooKeeper for the session; tests that kill it use zookeeper_server_private."""
    yield from _server(ZooKeeperServer)  # type: ignore[misc]


@pytest.fixture
def zookeeper_server_private() -> Iterator[ZooKeeperServer]:
    yield from _server(ZooKeeperServer)  # type: ignore[misc]


@pytest.fixture(scope="module")
def rabbitmq_server() -> Iterator[RabbitMQServer]:
    """One broker per module: it takes seconds to start, and a test may restart it."""
    yield from _server(RabbitMQServer)  # type: ignore[misc]


@pytest.fixture(scope="session")
def memcached_server() -> Iterator[MemcachedServer]:
    yield from _server(MemcachedServer)  # type: ignore[misc]


@pytest.fixture
def memcached_server_private() -> Iterator[MemcachedServer]:
    yield from _server(MemcachedServer)  # type: ignore[misc]


@pytest.fixture
def memcached_pair() -> Iterator[list[MemcachedServer]]:
    """Two servers, for HashClient and one-of-several-gone cases."""
    servers = [MemcachedServer(), MemcachedServer()]
    try:
        for server in servers:
            server.start()
    except ServerUnavailable as exc:
        for server in servers:
            server.cleanup()
        unavailable("memcached", exc)
    yield servers
    for server in servers:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable("Redis", exc)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def postgresql_server_private() -> Iterator[PostgreSQLServer]:
    """A PostgreSQL of this test's own (kill -9 and restart it at will), schema migrated."""
    for server in _server(PostgreSQLServer):
        engine = make_engine(server.url)  # type: ignore[attr-defined]
        migration.upgrade(engine)
        engine.dispose()
        yield server  # type: ignore[misc]


@pytest.fixture
def proxy() -> Iterator[Callable[[str], Proxy]]:
    """proxy("host:port") -> a TCP proxy to it; all closed at the end."""
    proxies: list[Proxy] = []

    def factory(address: str) -> Proxy:
        made = Proxy.to(address)
        proxies.append(made)
        return made

    yield factory
    for made in proxies:
        made.close()


@pytest.fixture
def status_server() -> Iterator[tuple[str, list[int]]]:
    """An HTTP server answering GET with the status at the head of the list."""
    status = [200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status[0])
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/health", status
    finally:
        server.shutdown()
        server.server_close()
