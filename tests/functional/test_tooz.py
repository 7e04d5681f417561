"""The tooz driver against real backends: Redis (the machine's) and ZooKeeper through tooz."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from tooz import coordination

from servicegroup import ServiceGroup, State
from servicegroup.drivers import tooz as tooz_driver
from servicegroup.drivers.tooz import coordination_url, escape, member_id, redact
from servicegroup.exceptions import BackendError
from tests.conftest import empty_tables
from tests.helpers import wait_for
from tests.servers import free_port

# tooz's zookeeper driver takes whole seconds for its session timeout.
DOWN_TIME = {"redis": 0.5, "zookeeper": 1.0}


@pytest.fixture(params=["redis", "zookeeper"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def backend_url(request: pytest.FixtureRequest, kind: str) -> str:
    """A backend URL isolated from every other test by a unique tooz namespace."""
    tag = f"sg-{uuid.uuid4().hex[:10]}"
    if kind == "redis":
        return f"{request.getfixturevalue('redis_url')}?namespace={tag}"
    server = request.getfixturevalue("zookeeper_server")
    return f"zookeeper://{server.address}?namespace={tag}"


@pytest.fixture
def group(
    make_group: Callable[..., ServiceGroup], sqlite_url: str, backend_url: str, kind: str
) -> Callable[..., ServiceGroup]:
    def factory(url: str = sqlite_url, **options: Any) -> ServiceGroup:
        options.setdefault("report_interval", DOWN_TIME[kind] / 5)
        options.setdefault("service_down_time", DOWN_TIME[kind])
        return make_group(url, driver="tooz", tooz__backend_url=backend_url, **options)

    return factory


@pytest.fixture
def outsider(backend_url: str) -> Iterator[Callable[[bytes], coordination.CoordinationDriver]]:
    """Plain tooz coordinators, to look at (or tamper with) the backend behind the driver."""
    started: list[coordination.CoordinationDriver] = []

    def factory(member: bytes) -> coordination.CoordinationDriver:
        coord = coordination.get_coordinator(f"{backend_url}&executor=synchronous", member)
        coord.start()
        started.append(coord)
        return coord

    yield factory
    for coord in started:
        if coord.is_started:
            coord.stop()


# -- pure functions -------------------------------------------------------------


def test_url_gets_expiry_from_service_down_time() -> None:
    url = coordination_url("redis://h:6379?namespace=x", 0.5, 2.0)
    assert "membership_timeout=0.5" in url and "socket_timeout=2.0" in url
    assert "namespace=x" in url
    kept = coordination_url("redis://h?membership_timeout=7&socket_timeout=1", 0.5, 2.0)
    assert "membership_timeout=7" in kept and "membership_timeout=0.5" not in kept
    assert "socket_timeout=1&" in kept + "&" and "socket_timeout=2.0" not in kept
    # ZooKeeper: whole seconds, rounded up so nothing is called down early.
    assert coordination_url("zookeeper://h:2181", 2.5, 5.0).endswith("?timeout=3")
    assert coordination_url("zookeeper://h:2181", 2.5, 0.2, reader=True).endswith("timeout=1")
    assert coordination_url("zookeeper://h?timeout=9", 2.5, 5.0).endswith("?timeout=9")
    assert "membership_timeout=61" in coordination_url("etcd3+http://h", 60.5, 5.0)


def test_names_are_escaped_into_safe_distinct_ids() -> None:
    names = ["a/b", "a%2Fb", ".", "..", "x@y", "dé jà", "host-1.example.org", "~_-"]
    escaped = [escape(n) for n in names]
    assert len(set(escaped)) == len(names)
    for e in escaped:
        assert e.isascii() and "/" not in e and "@" not in e and e.strip(".")
    assert member_id("a@b", "c") != member_id("a", "b@c")
    assert escape("host-1.example.org") == "host-1.example.org"  # readable when it can be


def test_redact_hides_passwords() -> None:
    shown = redact("redis://user:s3cret@h:6379?sentinel_password=also&namespace=n")
    assert "s3cret" not in shown and "also" not in shown
    assert "user:***@h:6379" in shown and "namespace=n" in shown


# -- against the backends ---------------------------------------------------------


def test_heartbeat_up_then_silence_down(group, kind: str) -> None:
    sg = group()
    service = sg.register("host-1", "compute")
    sg.heartbeat(service)
    status = sg.get(service)
    assert status.state is State.UP and status.last_heartbeat is not None
    # No beat: the backend's expiry (redis) or the driver's own withdrawal
    # of a silent member (a live ZooKeeper session would keep it) -> down.
    wait_for(lambda: not sg.is_up(service), "silence to make the service down")
    assert sg.get(service).state is State.DOWN


def test_leave_is_down_at_once(group) -> None:
    sg = group()
    service = sg.register("host-1", "compute")
    sg.join(service)
    wait_for(lambda: sg.is_up(service), "the service to be up")
    sg.leave(service)
    assert sg.get(service).state is State.DOWN


def test_leave_from_another_process_removes_the_member(group) -> None:
    beating, admin = group(), group()
    service = beating.register("host-1", "compute")
    beating.heartbeat(service)
    admin.leave(service)  # admin holds no coordinator for it: borrows the member id
    assert not admin.is_up(service)


def test_member_removed_behind_its_back_joins_again(group, outsider) -> None:
    sg = group()
    service = sg.register("host-1", "compute")
    sg.join(service)
    wait_for(lambda: sg.is_up(service), "the service to be up")
    mid, gid = member_id("host-1", "compute"), b"compute"
    coord = sg.driver._members[("host-1", "compute")].coord
    joins = {"count": 0}
    real_join = coord.join_group

    def counted_join(*args: Any, **kwargs: Any) -> Any:
        joins["count"] += 1
        return real_join(*args, **kwargs)

    coord.join_group = counted_join
    # Another coordinator with the same member id leaves the group (it raises
    # MemberNotJoined if the member was not there): as if an outage had
    # expired the member and a reader had pruned it.
    impostor = outsider(mid)
    impostor.leave_group(gid).get()
    impostor.stop()
    watcher = outsider(b"%watcher")
    wait_for(lambda: joins["count"] >= 1, "the driver to join again")
    wait_for(lambda: mid in watcher.get_members(gid).get(), "the member to be back")
    wait_for(lambda: sg.is_up(service), "the service to be up again")


def test_capabilities_follow_version(group, outsider) -> None:
    sg = group()
    service = sg.register("host-1", "compute", version=1)
    sg.heartbeat(service)
    watcher = outsider(b"%watcher")
    mid = member_id("host-1", "compute")
    caps = watcher.get_member_capabilities(b"compute", mid).get()
    assert caps == {"uuid": service.uuid, "version": 1}
    sg.heartbeat(sg.set_version(service, 2))
    assert watcher.get_member_capabilities(b"compute", mid).get()["version"] == 2


def test_read_is_one_get_members_per_binary(group) -> None:
    sg = group()
    services = [sg.register(f"host-{i}", b) for i in range(5) for b in ("a", "b", "c")]
    for svc in services[::2]:
        sg.heartbeat(svc)
    sg.get_all()  # start the reader
    reader = sg.driver._reader_coord()
    calls: dict[str, int] = {"get_members": 0, "get_member_capabilities": 0}

    def spy(name: str) -> None:
        real = getattr(reader, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return real(*args, **kwargs)

        setattr(reader, name, counted)

    spy("get_members")
    spy("get_member_capabilities")
    statuses = sg.get_all()
    assert calls == {"get_members": 3, "get_member_capabilities": 0}
    up = {s.service.uuid for s in statuses if s.is_up}
    assert up == {s.uuid for s in services[::2]}
    # The sweeper's pass in slices of 4 (15 services, 3 binaries): still one
    # get_members per binary, and the same states as the whole read.
    calls["get_members"] = 0
    sliced = [status for part in sg.slices(4) for status in part.statuses]
    assert calls["get_members"] == 3
    assert len(sliced) == 15 and {s.service.uuid for s in sliced if s.is_up} == up
    list(sg.slices(4))  # the next pass reads the groups again: no stale membership
    assert calls["get_members"] == 6


def test_binary_nobody_joined_is_down(group) -> None:
    sg = group()
    service = sg.register("host-1", "never-started")
    assert sg.get(service).state is State.DOWN


def test_awkward_names(group) -> None:
    sg = group()
    odd = [("a/b c", "bin/x"), (".", ".."), ("dé jà@vu", "nova compute"), ("%2F", "a%")]
    services = [sg.register(h, b) for h, b in odd]
    for svc in services[:2]:
        sg.heartbeat(svc)
    states = {s.service.uuid: s.state for s in sg.get_all()}
    assert [states[s.uuid] for s in services] == [State.UP, State.UP, State.DOWN, State.DOWN]


CHILD = textwrap.dedent(
    """
    import sys, time
    from servicegroup import ServiceGroup
    url, backend, down, interval = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    sg = ServiceGroup.from_options(
        database__connection=url, driver="tooz", tooz__backend_url=backend,
        service_down_time=down, report_interval=interval,
    )
    sg.join(sg.register("host-1", "conductor"))
    print("joined", flush=True)
    time.sleep(600)
    """
)


def test_killed_process_goes_down_alone(group, sqlite_url: str, backend_url: str, kind: str):
    """Two services on one host: killing one must not be hidden by the other's beats."""
    sg = group()
    compute = sg.register("host-1", "compute")
    sg.join(compute)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, sqlite_url, backend_url, str(DOWN_TIME[kind]), "0.1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "joined"
        conductor = sg.get_all(binary="conductor")[0].service
        wait_for(lambda: sg.is_up(conductor), "the child's service to be up")
        child.kill()
        child.wait()
        wait_for(lambda: not sg.is_up(conductor), "the killed service to go down")
        assert sg.is_up(compute)
    finally:
        child.kill()
        child.wait()


def test_records_on_postgresql(group, postgresql_db: str) -> None:
    empty_tables(postgresql_db)
    sg = group(postgresql_db)
    a, b = sg.register("host-1", "compute"), sg.register("host-2", "compute")
    sg.heartbeat(a)
    assert {s.service.uuid: s.state for s in sg.get_all()} == {
        a.uuid: State.UP,
        b.uuid: State.DOWN,
    }
    sg.leave(a)
    assert not sg.is_up(a)


def test_describe_names_the_backend(group) -> None:
    info = group().health()
    assert info["driver"] == "tooz"
    assert "namespace=sg-" in info["backend_url"]


def test_redis_members_share_one_client_and_still_expire_alone(
    make_group, sqlite_url: str, redis_url: str
) -> None:
    """One redis-py client (and pool) per driver, not per service: beats stay per member."""
    url = f"{redis_url}?namespace=sg-{uuid.uuid4().hex[:10]}"
    sg = make_group(
        sqlite_url,
        driver="tooz",
        tooz__backend_url=url,
        report_interval=0.1,
        service_down_time=0.5,
    )
    services = [sg.register(f"host-{i}", "compute") for i in range(24)]
    threads = 6
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(sg.heartbeat, services * 3))
    assert all(sg.is_up(s) for s in services)

    driver = sg.driver
    members = list(driver._members.values())
    assert len(members) == len(services)
    client = members[0].coord._client
    assert all(m.coord._client is client for m in members)
    assert driver._reader_coord()._client is client
    pool_ = client.connection_pool
    assert pool_._created_connections <= threads + 1  # by concurrency, not by service count
    assert all(set(m.coord._server_info) == {"redis_version"} for m in members)

    # Only one keeps beating: the others expire on their own, it stays up.
    kept = services[0]
    reporter = sg.join(kept)
    wait_for(lambda: not any(sg.is_up(s) for s in services[1:]), "the silent ones to go down")
    assert sg.is_up(kept) and reporter.alive
    # A silent one comes back on its own coordinator, over the same client.
    sg.heartbeat(services[1])
    assert sg.is_up(services[1])
    assert driver._members[("host-1", "compute")].coord._client is client
    sg.leave(kept)
    assert not sg.is_up(kept) and sg.is_up(services[1])


# -- backend unreachable ----------------------------------------------------------


def test_redis_unreachable_is_unknown_not_down(make_group, sqlite_url: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}?namespace=gone"
    sg = make_group(sqlite_url, driver="tooz", tooz__backend_url=url, tooz__request_timeout=0.5)
    service = sg.register("host-1", "compute")
    with pytest.raises(BackendError):
        sg.heartbeat(service)
    assert [s.state for s in sg.get_all()] == [State.UNKNOWN]
    with pytest.raises(BackendError):
        sg.health()


def test_unknown_scheme_is_a_config_error(make_group, sqlite_url: str) -> None:
    from servicegroup.exceptions import ConfigError

    with pytest.raises(ConfigError, match="nosuch"):
        make_group(sqlite_url, driver="tooz", tooz__backend_url="nosuch://x")


def test_errors_cover_the_client_libraries() -> None:
    import redis
    from kazoo.exceptions import ConnectionLoss

    errors = tooz_driver.ToozDriver.backend_errors
    assert issubclass(redis.ConnectionError, errors)
    assert issubclass(ConnectionLoss, errors)
    assert issubclass(coordination.ToozConnectionError, errors)


def test_zookeeper_outage_is_unknown_and_recovers(
    make_group, sqlite_url: str, zookeeper_server_private
) -> None:
    """tooz's zookeeper heartbeat() has no timeout: the driver must not hang on it."""
    server = zookeeper_server_private
    url = f"zookeeper://{server.address}?namespace=sg-{uuid.uuid4().hex[:10]}"
    sg = make_group(
        sqlite_url,
        driver="tooz",
        tooz__backend_url=url,
        tooz__request_timeout=1.0,
        report_interval=0.2,
        service_down_time=1.0,
    )
    service = sg.register("host-1", "compute")
    reporter = sg.join(service)
    wait_for(lambda: sg.is_up(service), "the service to be up")
    server.kill()
    wait_for(lambda: reporter.consecutive_failures >= 2, "beats to fail, not hang")
    assert [s.state for s in sg.get_all()] == [State.UNKNOWN]
    server.start()
    wait_for(lambda: sg.is_up(service), "the service to be up after the outage")
    assert reporter.alive
