"""The memcached driver against real throwaway memcached servers.

What the conformance suite cannot say for every backend: ages judged from the
stored time (the TTL is whole seconds, the down time half a second), keys
valid for any name, one get_many per server, and a dead or frozen server
making exactly its own services unknown, never down, and never a hang.
"""

from __future__ import annotations

import logging
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from servicegroup import ServiceGroup, State
from servicegroup.clock import SkewedClock
from servicegroup.db import records
from servicegroup.drivers.base import UNKNOWN
from servicegroup.drivers.memcached import SENTINEL, MemcachedDriver
from servicegroup.exceptions import BackendError, ConfigError
from tests.conftest import empty_tables
from tests.helpers import wait_for
from tests.servers import MemcachedServer

DOWN_TIME = 0.5
INTERVAL = 0.05
SOCKET_TIMEOUT = 0.3


@pytest.fixture
def mc_group(
    make_group: Callable[..., ServiceGroup],
) -> Callable[..., ServiceGroup]:
    """Groups on the memcached driver; one key prefix per test so tests never share keys."""
    prefix = f"sg-{uuid.uuid4().hex}:"

    def factory(url: str, servers: list[MemcachedServer], **options: Any) -> ServiceGroup:
        options.setdefault("driver", "memcached")
        options.setdefault("memcached__key_prefix", prefix)
        options.setdefault("memcached__socket_timeout", SOCKET_TIMEOUT)
        options.setdefault("memcached__connect_timeout", SOCKET_TIMEOUT)
        return make_group(
            url,
            memcached__servers=[s.address for s in servers],
            **options,
        )

    return factory


def driver_of(sg: ServiceGroup) -> MemcachedDriver:
    assert isinstance(sg.driver, MemcachedDriver)
    return sg.driver


def raw_value(sg: ServiceGroup, service) -> bytes | None:
    driver = driver_of(sg)
    return driver.servers[driver._server_of(service.uuid)].client().get(service.uuid)


def test_alias_mc_loads_the_same_driver(sqlite_url, memcached_server, mc_group) -> None:
    sg = mc_group(sqlite_url, [memcached_server], driver="mc")
    assert isinstance(sg.driver, MemcachedDriver)


def test_heartbeat_up_then_silence_down_judged_from_the_stored_time(
    sqlite_url, memcached_server, mc_group
) -> None:
    sg = mc_group(sqlite_url, [memcached_server])
    service = sg.register("host-1", "compute", version=7)
    assert sg.get(service).state is State.DOWN  # never heartbeated

    sg.heartbeat(service)
    status = sg.get(service)
    assert status.state is State.UP
    assert status.last_heartbeat is not None
    assert raw_value(sg, service).split(b"|")[1] == b"7"

    wait_for(lambda: not sg.is_up(service), "silence to make the service down")
    # The key lives ceil(0.5) + 1 = 2 s, so "down" came from the stored time,
    # not from memcached expiring the key.
    assert driver_of(sg).ttl == 2
    assert raw_value(sg, service) is not None
    assert sg.get(service).state is State.DOWN


def test_reader_clock_ahead_by_more_than_down_time_sees_down(
    sqlite_url, memcached_server, mc_group
) -> None:
    """Ages are the reader's clock minus the writer's stored time: skew enters them."""
    writer = mc_group(sqlite_url, [memcached_server])
    reader = mc_group(sqlite_url, [memcached_server], clock=SkewedClock(DOWN_TIME + 0.5))
    service = writer.register("host-1", "compute")
    writer.heartbeat(service)
    assert writer.get(service).state is State.UP
    assert reader.get(service).state is State.DOWN


def test_writer_clock_far_ahead_is_bounded_by_the_ttl(
    sqlite_url, memcached_server, mc_group
) -> None:
    """A writer an hour ahead looks fresh, but only until memcached drops the key."""
    writer = mc_group(sqlite_url, [memcached_server], clock=SkewedClock(3600))
    reader = mc_group(sqlite_url, [memcached_server])
    service = writer.register("host-1", "compute")
    writer.heartbeat(service)
    assert reader.get(service).state is State.UP
    wait_for(lambda: reader.get(service).state is State.DOWN, "the TTL to end the skewed beat")
    assert raw_value(reader, service) is None


def test_leave_makes_down_at_once_and_deletes_the_key(
    sqlite_url, memcached_server, mc_group
) -> None:
    sg = mc_group(sqlite_url, [memcached_server])
    service = sg.register("host-1", "compute")
    sg.heartbeat(service)
    assert sg.is_up(service)
    sg.leave(service)
    assert sg.get(service).state is State.DOWN
    assert raw_value(sg, service) is None


@pytest.mark.parametrize(
    "host",
    [
        "host with spaces",
        "rack/7/node.example.org",
        "hôte-ünïcødé-主机-🖥",
        "h" * 255,
        "punctuation ~!@#$%^&*()[]{}|\\:;\"'<>,.?",
    ],
)
def test_any_valid_name_gives_a_valid_key(sqlite_url, memcached_server, mc_group, host) -> None:
    sg = mc_group(sqlite_url, [memcached_server])
    service = sg.register(host, "bin ary/ü" + "b" * 200)
    sg.heartbeat(service)
    assert sg.is_up(service)
    sg.leave(service)
    assert not sg.is_up(service)


def test_bad_key_prefix_is_a_config_error(sqlite_url, memcached_server, mc_group) -> None:
    for prefix in ("has space:", "ctl\x01:", "ünï:", "p" * 215):
        with pytest.raises(ConfigError, match="key_prefix"):
            mc_group(sqlite_url, [memcached_server], memcached__key_prefix=prefix)
    mc_group(sqlite_url, [memcached_server], memcached__key_prefix="p" * 214)


def test_a_value_that_cannot_be_read_is_unknown(sqlite_url, memcached_server, mc_group) -> None:
    sg = mc_group(sqlite_url, [memcached_server])
    service = sg.register("host-1", "compute")
    driver = driver_of(sg)
    driver.servers[0].client().set(service.uuid, b"not a heartbeat", expire=5, noreply=False)
    assert sg.get(service).state is State.UNKNOWN


def test_an_unchanged_value_is_read_as_the_same_pulse_and_a_new_one_anew(
    sqlite_url, memcached_server, mc_group
) -> None:
    """Most keys are unchanged between two reads: their Pulse is handed back unparsed."""
    sg = mc_group(sqlite_url, [memcached_server])
    service = sg.register("host-1", "compute")
    driver = driver_of(sg)
    recordset = records.query(sg.engine, uuids=[service.uuid])
    sg.heartbeat(service)
    first = driver.read(recordset).pulses[service.uuid]
    assert driver.read(recordset).pulses[service.uuid] is first

    client = driver.servers[0].client()
    stored = client.get(service.uuid)
    later = b"%d|0" % (int(stored.split(b"|")[0]) + 1_000_000)  # one second later
    client.set(service.uuid, later, expire=5, noreply=False)
    second = driver.read(recordset).pulses[service.uuid]
    assert second is not first
    assert (second.last_heartbeat - first.last_heartbeat).total_seconds() == 1.0

    client.set(service.uuid, b"not a heartbeat", expire=5, noreply=False)
    assert driver.read(recordset).pulses[service.uuid] is UNKNOWN
    client.delete(service.uuid, noreply=False)
    assert service.uuid not in driver.read(recordset).pulses


def count_calls(sg: ServiceGroup, method: str) -> list[list[Any]]:
    """Spy on every server's client (of this thread); one entry per request and its keys."""
    calls: list[list[Any]] = []
    for server in driver_of(sg).servers:
        client = server.client()
        real = getattr(client, method)

        def spy(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            calls.append(list(args[0]) if args else [])
            return _real(*args, **kwargs)

        setattr(client, method, spy)
    return calls


@pytest.mark.parametrize("n_servers", [1, 2])
def test_get_all_is_one_get_many_per_server(
    sqlite_url, memcached_pair, mc_group, n_servers
) -> None:
    sg = mc_group(sqlite_url, memcached_pair[:n_servers])
    services = [sg.register(f"host-{i}", "compute") for i in range(200)]
    for service in services[::2]:
        sg.heartbeat(service)

    get_many = count_calls(sg, "get_many")
    single_gets = count_calls(sg, "get")
    statuses = sg.get_all()

    assert len(get_many) == n_servers  # each server holds some of 200 keys
    # Each get_many also carries that server's restart sentinel.
    assert all(keys[-1] == SENTINEL for keys in get_many)
    assert sorted(k for keys in get_many for k in keys[:-1]) == sorted(s.uuid for s in services)
    assert single_gets == []
    up = {s.service.uuid for s in statuses if s.state is State.UP}
    assert up == {s.uuid for s in services[::2]}
    assert all(s.state is State.DOWN for s in statuses if s.service.uuid not in up)


def split_by_server(sg: ServiceGroup, services: list) -> tuple[list, list]:
    driver = driver_of(sg)
    on_first = [s for s in services if driver._server_of(s.uuid) == 0]
    on_second = [s for s in services if driver._server_of(s.uuid) == 1]
    assert on_first and on_second, "40 services should land on both servers"
    return on_first, on_second


def test_one_dead_server_makes_exactly_its_services_unknown(
    sqlite_url, memcached_pair, mc_group
) -> None:
    sg = mc_group(sqlite_url, memcached_pair)
    services = [sg.register(f"host-{i}", "compute") for i in range(40)]
    on_dead, on_alive = split_by_server(sg, services)
    beating = services[::2]
    for service in beating:
        sg.heartbeat(service)
    forced = on_dead[0]
    sg.set_forced_down(forced, True)

    memcached_pair[0].kill()
    states = {s.service.uuid: s.state for s in sg.get_all()}

    for service in on_dead:
        expected = State.DOWN if service.uuid == forced.uuid else State.UNKNOWN
        assert states[service.uuid] is expected
    for service in on_alive:
        expected = State.UP if service in beating else State.DOWN
        assert states[service.uuid] is expected
    unknown = next(s for s in on_dead if s.uuid != forced.uuid)
    assert sg.is_up(unknown) is False
    assert sg.get_all(state="unknown")

    # Beats of its services fail loudly; the others' beats still land.
    with pytest.raises(BackendError):
        sg.heartbeat(unknown)
    sg.heartbeat(on_alive[0])
    assert sg.is_up(on_alive[0])
    health = sg.health()
    answers = {s["address"]: s["answers"] for s in health["servers"]}
    assert answers == {memcached_pair[0].address: False, memcached_pair[1].address: True}


def test_a_batch_across_a_dead_server_fails_only_that_servers_beats(
    sqlite_url, memcached_pair, mc_group
) -> None:
    sg = mc_group(sqlite_url, memcached_pair, service_down_time=30.0, report_interval=1.0)
    services = [sg.register(f"host-{i}", "compute") for i in range(40)]
    on_dead, on_alive = split_by_server(sg, services)
    memcached_pair[0].kill()

    failed = sg.heartbeat_many(services)
    assert set(failed) == {s.uuid for s in on_dead}
    assert all(isinstance(error, BackendError) for error in failed.values())
    assert all(sg.is_up(service) for service in on_alive)

    memcached_pair[1].kill()
    with pytest.raises(BackendError, match="no memcached server answered"):
        sg.heartbeat_many(services)


def run_bounded(func: Callable[[], Any], guard: float = 30.0) -> Any:
    """Run func in a thread; fail (not hang) if it never returns. A hang guard only."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = func()
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(guard)
    assert not thread.is_alive(), "the call hung"
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.fixture
def frozen() -> Iterator[list[MemcachedServer]]:
    """Servers to SIGSTOP: they accept connections and never answer, like a hung host."""
    stopped: list[MemcachedServer] = []
    yield stopped
    for server in stopped:
        if server.proc is not None:
            server.proc.send_signal(signal.SIGCONT)


@pytest.mark.parametrize("how", ["killed", "frozen"])
def test_all_servers_gone_is_unknown_and_never_hangs(
    sqlite_url, memcached_pair, mc_group, frozen, how
) -> None:
    sg = mc_group(sqlite_url, memcached_pair)
    services = [sg.register(f"host-{i}", "compute") for i in range(20)]
    for service in services:
        sg.heartbeat(service)
    assert all(s.is_up for s in sg.get_all())

    for server in memcached_pair:
        if how == "killed":
            server.kill()
        else:
            server.proc.send_signal(signal.SIGSTOP)
            frozen.append(server)

    statuses = run_bounded(sg.get_all)
    assert [s.state for s in statuses] == [State.UNKNOWN] * len(services)
    assert run_bounded(lambda: sg.is_up(services[0])) is False
    with pytest.raises(BackendError, match="no memcached server answered"):
        run_bounded(sg.health)
    with pytest.raises(BackendError):
        run_bounded(lambda: sg.heartbeat(services[0]))


def test_one_frozen_server_does_not_hold_the_others_hostage(
    sqlite_url, memcached_pair, mc_group, frozen
) -> None:
    sg = mc_group(sqlite_url, memcached_pair)
    services = [sg.register(f"host-{i}", "compute") for i in range(40)]
    for service in services:
        sg.heartbeat(service)
    on_frozen, on_alive = split_by_server(sg, services)
    memcached_pair[0].proc.send_signal(signal.SIGSTOP)
    frozen.append(memcached_pair[0])

    states = {s.service.uuid: s.state for s in run_bounded(sg.get_all)}
    assert {states[s.uuid] for s in on_frozen} == {State.UNKNOWN}
    assert {states[s.uuid] for s in on_alive} == {State.UP}


def test_reporter_keeps_reporting_across_a_server_restart(
    sqlite_url, memcached_server_private, mc_group, caplog
) -> None:
    sg = mc_group(sqlite_url, [memcached_server_private])
    service = sg.register("host-1", "compute")
    with caplog.at_level(logging.INFO, logger="servicegroup.reporter"):
        reporter = sg.join(service)
        wait_for(lambda: sg.is_up(service), "the service to come up")

        memcached_server_private.kill()  # every key is lost
        wait_for(lambda: reporter.consecutive_failures > 0, "a beat to fail while it is gone")
        assert sg.get(service).state is State.UNKNOWN
        memcached_server_private.start()
        wait_for(lambda: reporter.healthy, "the reporter to recover")
        wait_for(lambda: sg.is_up(service), "the service to be up again")

    assert reporter.alive
    lost = [r for r in caplog.records if "lost connection" in r.getMessage()]
    recovered = [r for r in caplog.records if "recovered" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelno == logging.WARNING
    assert len(recovered) == 1 and recovered[0].levelno == logging.INFO


def test_restart_without_a_failed_beat_is_invisible_to_the_reporter(
    sqlite_url, memcached_server_private, mc_group
) -> None:
    """A pooled connection left stale by a restart is retried once, not reported as an outage."""
    sg = mc_group(sqlite_url, [memcached_server_private])
    service = sg.register("host-1", "compute")
    sg.heartbeat(service)
    memcached_server_private.restart()
    sg.heartbeat(service)
    assert sg.is_up(service)


def test_records_on_postgresql(postgresql_db, memcached_server, mc_group) -> None:
    empty_tables(postgresql_db)
    sg = mc_group(postgresql_db, [memcached_server])
    service = sg.register("host/ü 1", "compute")
    assert not sg.is_up(service)
    reporter = sg.join(service)
    wait_for(lambda: sg.is_up(service), "the service to come up")
    assert reporter.alive
    sg.leave(service)
    assert sg.get(service).state is State.DOWN
    empty_tables(postgresql_db)


def test_keys_land_where_hashclient_would_put_them(sqlite_url, memcached_pair, mc_group) -> None:
    """Placement is pymemcache's, so ops tools using HashClient find the same keys."""
    from pymemcache.client.hash import HashClient

    sg = mc_group(sqlite_url, memcached_pair)
    driver = driver_of(sg)
    reference = HashClient([s.address for s in memcached_pair])
    for i in range(50):
        service = sg.register(f"host-{i}", "compute")
        expected = "{}:{}".format(*reference._get_client(service.uuid).server)
        assert driver.addresses[driver._server_of(service.uuid)] == expected
