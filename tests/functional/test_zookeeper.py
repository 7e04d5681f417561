"""The zookeeper driver against a real, throwaway ZooKeeper.

Timings are sub-second (tickTime 100 ms) and every state change is awaited
with a polling deadline, never asserted against a stopwatch.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import pytest
from kazoo.client import KazooClient

from servicegroup import ServiceGroup
from servicegroup.clock import SkewedClock
from servicegroup.db.records import RecordSet
from servicegroup.drivers import zookeeper
from servicegroup.drivers.base import NEVER
from servicegroup.drivers.zookeeper import MULTI_READ_OP_COST, ZooKeeperDriver, escape
from servicegroup.exceptions import BackendError
from servicegroup.service import Service, State
from tests.conftest import empty_tables
from tests.helpers import wait_for
from tests.servers import ZooKeeperServer

SESSION_TIMEOUT = 0.6
DOWN_TIME = 0.5


def state(group: ServiceGroup, service: Service) -> State:
    return group.get(service).state


@pytest.fixture
def root() -> str:
    return f"/sg-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def raw(zookeeper_server: ZooKeeperServer) -> Iterator[KazooClient]:
    """A plain kazoo client, to look at the znodes behind the driver's back."""
    client = KazooClient(hosts=zookeeper_server.address, timeout=5)
    client.start(10)
    yield client
    client.stop()
    client.close()


@pytest.fixture
def zk_group(make_group, zookeeper_server: ZooKeeperServer, root: str):
    def factory(url: str, server: ZooKeeperServer | None = None, **options: Any) -> ServiceGroup:
        options.setdefault("driver", "zookeeper")
        options.setdefault("zookeeper__hosts", [(server or zookeeper_server).address])
        options.setdefault("zookeeper__root", root)
        options.setdefault("zookeeper__session_timeout", SESSION_TIMEOUT)
        options.setdefault("zookeeper__connect_timeout", 2.0)
        options.setdefault("service_down_time", DOWN_TIME)
        return make_group(url, **options)

    return factory


def node_path(root: str, service: Service) -> str:
    return f"{root}/{escape(service.binary)}/{escape(service.host)}"


def session_of(group: ServiceGroup) -> int:
    return group.driver._client.client_id[0]


# -- escaping ----------------------------------------------------------------


WEIRD = ["a/b", "a%2Fb", ".", "..", ".clock", "with space", "hôst-ü", "日本", "%", "a..b", "~x"]


def test_escape_is_a_legal_injective_znode_name():
    escaped = [escape(name) for name in WEIRD]
    assert len(set(escaped)) == len(WEIRD)
    for name, znode in zip(WEIRD, escaped, strict=True):
        assert "/" not in znode
        assert znode not in (".", "..", "")
        assert not znode.startswith(".")
        assert znode.isascii() and znode.isprintable()
        assert unquote(znode) == name
    assert escape("nova-compute") == "nova-compute"


def test_weird_names_each_get_their_own_node(zk_group, sqlite_url, raw, root):
    group = zk_group(sqlite_url)
    services = [group.register(host, "bin/ary .x") for host in WEIRD]
    services.append(group.register("host", ".clock"))
    for svc in services:
        group.heartbeat(svc)
    assert all(s.state is State.UP for s in group.get_all())
    assert sorted(raw.get_children(f"{root}/{escape('bin/ary .x')}")) == sorted(
        escape(h) for h in WEIRD
    )
    for svc in services:
        data, _stat = raw.get(node_path(root, svc))
        assert json.loads(data)["uuid"] == svc.uuid

    group.leave(services[0])
    states = {s.service.uuid: s.state for s in group.get_all()}
    assert states.pop(services[0].uuid) is State.DOWN
    assert set(states.values()) == {State.UP}


# -- the life of a service ---------------------------------------------------


def test_heartbeat_makes_an_ephemeral_node_and_up(zk_group, sqlite_url, raw, root):
    group = zk_group(sqlite_url)
    svc = group.register("host1", "nova-compute", version=7)
    assert state(group, svc) is State.DOWN  # never beat
    group.join(svc)
    wait_for(lambda: state(group, svc) is State.UP)
    data, stat = raw.get(node_path(root, svc))
    assert json.loads(data) == {
        "uuid": svc.uuid,
        "version": 7,
        "binary": "nova-compute",
        "host": "host1",
    }
    assert stat.ephemeralOwner == session_of(group)
    group.leave(svc)
    group.heartbeat(svc)  # no reporter now: the node's mtime stays put
    mtime = raw.exists(node_path(root, svc)).mtime
    assert group.get(svc).last_heartbeat == datetime.fromtimestamp(mtime / 1000, UTC)
    info = group.health()
    assert info["driver"] == "zookeeper"
    assert info["state"] == "connected"
    assert info["session_id"] == f"0x{session_of(group):x}"


def test_hung_process_goes_down_though_its_node_lives(zk_group, sqlite_url, raw, root):
    group = zk_group(sqlite_url)
    svc = group.register("host1", "nova-compute")
    reporter = group.join(svc)
    wait_for(lambda: state(group, svc) is State.UP)
    reporter.stop()  # main loop hangs; kazoo's thread keeps the session alive
    wait_for(lambda: state(group, svc) is State.DOWN)
    stat = raw.exists(node_path(root, svc))
    assert stat is not None and stat.ephemeralOwner == session_of(group)
    group.heartbeat(svc)
    assert state(group, svc) is State.UP


def test_leave_is_down_at_once(zk_group, sqlite_url, raw, root):
    group = zk_group(sqlite_url)
    svc = group.register("host1", "nova-compute")
    group.join(svc)
    wait_for(lambda: state(group, svc) is State.UP)
    group.leave(svc)
    assert state(group, svc) is State.DOWN
    assert raw.exists(node_path(root, svc)) is None
    group.leave(svc)  # no node: still fine


def test_a_stale_node_of_another_uuid_is_not_a_heartbeat(zk_group, sqlite_url, raw, root):
    group = zk_group(sqlite_url)
    svc = group.register("host1", "nova-compute")
    raw.create(
        node_path(root, svc), json.dumps({"uuid": str(uuid.uuid4())}).encode(), makepath=True
    )
    status = group.get(svc)
    assert status.state is State.DOWN and status.last_heartbeat is None
    group.heartbeat(svc)  # the service takes the node back
    assert state(group, svc) is State.UP
    # Leaving does not delete a namesake's node.
    other = str(uuid.uuid4())
    raw.set(node_path(root, svc), json.dumps({"uuid": other}).encode())
    group.driver.forget(svc)
    assert json.loads(raw.get(node_path(root, svc))[0])["uuid"] == other


CHILD = textwrap.dedent(
    f"""
    import sys, time
    from servicegroup import ServiceGroup
    url, zk, root, service_uuid = sys.argv[1:]
    group = ServiceGroup.from_options(
        database__connection=url, driver="zookeeper", zookeeper__hosts=[zk],
        zookeeper__root=root, zookeeper__session_timeout={SESSION_TIMEOUT!r}, report_interval=0.05,
        service_down_time={DOWN_TIME!r})
    reporter = group.join(group.get(service_uuid).service)
    while not reporter.beats:
        time.sleep(0.01)
    print("beating", flush=True)
    time.sleep(3600)
    """
)


def test_killed_process_goes_down(zk_group, sqlite_url, zookeeper_server, raw, root):
    group = zk_group(sqlite_url)
    svc = group.register("host1", "nova-compute")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, sqlite_url, zookeeper_server.address, root, svc.uuid],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "beating"
        wait_for(lambda: state(group, svc) is State.UP)
        killed = time.monotonic()
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        wait_for(lambda: state(group, svc) is State.DOWN, every=0.005)
        print(f"kill -9 to down: {time.monotonic() - killed:.3f}s")
        # The session expires too, so the node itself goes.
        wait_for(lambda: raw.exists(node_path(root, svc)) is None)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)


# -- sessions ----------------------------------------------------------------


def expire_session(address: str, client_id: tuple[int, bytes]) -> None:
    """Close someone's session from outside, as ZooKeeper does when it expires one.

    A second client takes the session over (the server drops the first
    client's connection) and closes it; the first client then learns on
    reconnecting that its session is gone (kazoo's own test suite does this).
    """
    thief = KazooClient(hosts=address, client_id=client_id, timeout=SESSION_TIMEOUT)
    thief.start(10)
    thief.stop()
    thief.close()


def test_nodes_come_back_by_themselves_after_session_expiry(
    zk_group, sqlite_url, zookeeper_server, raw, root
):
    # One beat and no reporter (a huge interval): only the state listener can
    # put the nodes back.
    group = zk_group(sqlite_url, report_interval=600, service_down_time=1800)
    services = [group.register(f"host{i}", "nova-compute") for i in range(3)]
    for svc in services:
        group.heartbeat(svc)
    old_session = session_of(group)
    expire_session(zookeeper_server.address, group.driver._client.client_id)

    def recreated() -> bool:
        stats = [raw.exists(node_path(root, svc)) for svc in services]
        return all(s is not None and s.ephemeralOwner != old_session for s in stats)

    wait_for(recreated)
    owners = {raw.exists(node_path(root, svc)).ephemeralOwner for svc in services}
    assert owners == {session_of(group)}
    assert all(s.state is State.UP for s in group.get_all())


def test_forgotten_service_is_not_recreated_after_expiry(
    zk_group, sqlite_url, zookeeper_server, raw, root
):
    group = zk_group(sqlite_url, report_interval=600, service_down_time=1800)
    kept, gone = group.register("kept", "b"), group.register("gone", "b")
    group.heartbeat(kept)
    group.heartbeat(gone)
    group.leave(gone)
    old_session = session_of(group)
    expire_session(zookeeper_server.address, group.driver._client.client_id)
    wait_for(
        lambda: (stat := raw.exists(node_path(root, kept))) and stat.ephemeralOwner != old_session
    )
    assert raw.exists(node_path(root, gone)) is None


def test_restart_takes_over_the_node_of_its_old_session(zk_group, sqlite_url, raw, root):
    old = zk_group(sqlite_url)
    svc = old.register("host1", "nova-compute")
    old.heartbeat(svc)  # then the old process freezes, its session alive
    path = node_path(root, svc)
    assert raw.exists(path).ephemeralOwner == session_of(old)

    new = zk_group(sqlite_url)
    new.heartbeat(svc)  # no "node exists"
    assert raw.exists(path).ephemeralOwner == session_of(new)
    assert state(new, svc) is State.UP

    old.close()  # the old session ends: its ephemeral nodes go, this one must not
    assert raw.exists(path).ephemeralOwner == session_of(new)
    assert state(new, svc) is State.UP


def test_a_batch_is_one_multi_and_falls_back_to_a_pipeline_for_missing_nodes(
    zk_group, sqlite_url, raw, root, monkeypatch
):
    old = zk_group(sqlite_url, service_down_time=30.0, report_interval=1.0)
    new = zk_group(sqlite_url, service_down_time=30.0, report_interval=1.0)
    fleet = [new.register(f"host{i}", "nova-compute") for i in range(12)]
    old.heartbeat(fleet[0])  # an older session still owns this one's node
    new.heartbeat_many(fleet[1:6])  # these already exist under the new session
    spy = Spy(new.driver._client, monkeypatch)

    assert new.heartbeat_many(fleet) == {}
    # The multi fails whole (6 nodes are missing); then every set_data went
    # out before the first answer was awaited, then the creates and a take-over.
    kinds = [type(r).__name__ for r in spy.requests]
    assert kinds[0] == "Transaction"
    after_multi = spy.events[spy.events.index("wait") + 1 :]
    assert after_multi[: len(fleet)] == ["send:SetData"] * len(fleet)
    assert kinds.count("Create2") == 6 and kinds.count("Transaction") == 2, kinds
    owners = {raw.exists(node_path(root, svc)).ephemeralOwner for svc in fleet}
    assert owners == {session_of(new)}
    assert all(state(new, svc) is State.UP for svc in fleet)

    spy.requests.clear()
    mtimes = [raw.exists(node_path(root, svc)).mtime for svc in fleet]
    assert new.heartbeat_many(fleet) == {}  # every node exists now: one multi, nothing else
    assert [type(r).__name__ for r in spy.requests] == ["Transaction"]
    after = [raw.exists(node_path(root, svc)).mtime for svc in fleet]
    assert all(a >= b for a, b in zip(after, mtimes, strict=True))


def test_a_large_batch_is_cut_into_multis(zk_group, sqlite_url, monkeypatch):
    group = zk_group(sqlite_url, service_down_time=30.0, report_interval=1.0)
    fleet = [group.register(f"host{i:03d}", "nova-compute") for i in range(40)]
    assert group.heartbeat_many(fleet) == {}  # created
    monkeypatch.setattr(zookeeper, "MULTI_WRITE_BUDGET", 2_000)
    spy = Spy(group.driver._client, monkeypatch)
    assert group.heartbeat_many(fleet) == {}
    multis = spy.sent("Transaction")
    assert len(multis) > 1 and sum(len(m.operations) for m in multis) == len(fleet)
    first_wait = spy.events.index("wait")
    assert spy.events[:first_wait] == ["send:Transaction"] * len(multis)  # all sent first


# -- heartbeat nodes: several daemons ------------------------------------------


def test_heartbeat_nodes_outlive_the_daemon_that_wrote_them(zk_group, sqlite_url, raw, root):
    """node_lifetime = heartbeat (the daemon's): a daemon's death takes no service down."""
    timing = {"service_down_time": 30.0, "report_interval": 1.0}
    first = zk_group(sqlite_url, zookeeper__node_lifetime="heartbeat", **timing)
    second = zk_group(sqlite_url, zookeeper__node_lifetime="heartbeat", **timing)
    svc = first.register("host1", "nova-compute")
    first.heartbeat(svc)
    path = node_path(root, svc)
    assert raw.exists(path).ephemeralOwner == 0  # persistent

    first.close()  # the daemon it beat through dies: its session ends
    assert raw.exists(path) is not None
    assert state(second, svc) is State.UP
    mtime = raw.exists(path).mtime
    second.heartbeat(svc)  # it beats through another daemon now
    assert raw.exists(path).mtime >= mtime and raw.exists(path).ephemeralOwner == 0
    second.leave(svc)  # leave and delete remove a persistent node
    assert raw.exists(path) is None
    assert state(second, svc) is State.DOWN


def test_heartbeat_nodes_take_over_session_nodes(zk_group, sqlite_url, raw, root):
    """A daemon started where agents beat for themselves makes their nodes persistent."""
    agent = zk_group(sqlite_url, service_down_time=30.0, report_interval=1.0)
    daemon = zk_group(
        sqlite_url,
        zookeeper__node_lifetime="heartbeat",
        service_down_time=30.0,
        report_interval=1.0,
    )
    fleet = [agent.register(f"host{i}", "nova-compute") for i in range(4)]
    agent.heartbeat_many(fleet)
    assert {raw.exists(node_path(root, s)).ephemeralOwner for s in fleet} == {session_of(agent)}
    assert daemon.heartbeat_many(fleet[:2]) == {}
    daemon.heartbeat(fleet[2])
    owners = [raw.exists(node_path(root, s)).ephemeralOwner for s in fleet]
    assert owners == [0, 0, 0, session_of(agent)]
    agent.close()
    assert [raw.exists(node_path(root, s)) is not None for s in fleet] == [True] * 3 + [False]
    assert [state(daemon, s) for s in fleet] == [State.UP] * 3 + [State.DOWN]


# -- reads -------------------------------------------------------------------


class Spy:
    """Records what the driver's client sends (requests by kind) and when it awaits answers."""

    SYNC = ("get", "exists", "get_children", "set", "create", "delete", "sync")

    def __init__(self, client: KazooClient, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[str] = []
        self.requests: list[Any] = []
        for name in self.SYNC:
            monkeypatch.setattr(client, name, self._sync(name, getattr(client, name)))
        call = client._call

        def spy_call(request: Any, result: Any) -> Any:
            self.events.append(f"send:{type(request).__name__}")
            self.requests.append(request)
            real_get = result.get

            def get(*args: Any, **kwargs: Any) -> Any:
                self.events.append("wait")
                return real_get(*args, **kwargs)

            result.get = get
            return call(request, result)

        monkeypatch.setattr(client, "_call", spy_call)

    def sent(self, kind: str) -> list[Any]:
        return [r for r in self.requests if type(r).__name__ == kind]

    def _sync(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.events.append(f"sync:{name}")
            return method(*args, **kwargs)

        return call


# The multiRead tests check how a read is sent, not expiry: a down time long
# enough that a loaded machine cannot age their beats out before the read.
READ_TEST_DOWN_TIME = 30.0


def beat_every_other(group: ServiceGroup, count: int) -> tuple[list[Service], dict[str, State]]:
    """`count` services (paths of one length), the even ones beating: get_all's answer."""
    services = [group.register(f"host{i:03d}", f"bin{i % 3}") for i in range(count)]
    for svc in services[::2]:
        group.heartbeat(svc)
    expected = {s.uuid: State.UP if i % 2 == 0 else State.DOWN for i, s in enumerate(services)}
    return services, expected


@pytest.mark.parametrize("count", [1, 40])
def test_read_is_one_multiread_whatever_the_number_of_services(
    zk_group, sqlite_url, monkeypatch, count
):
    group = zk_group(sqlite_url, service_down_time=READ_TEST_DOWN_TIME)
    _services, expected = beat_every_other(group, count)
    spy = Spy(group.driver._client, monkeypatch)
    assert {s.service.uuid: s.state for s in group.get_all()} == expected
    # The odd services never beat: their ops fail NoNode inside the same multiRead.
    assert spy.events == ["send:MultiRead", "wait"]
    assert len(spy.sent("MultiRead")[0].paths) == count


def test_a_large_read_is_cut_into_multireads_all_sent_before_any_wait(
    zk_group, sqlite_url, monkeypatch
):
    group = zk_group(sqlite_url, service_down_time=READ_TEST_DOWN_TIME)
    _services, expected = beat_every_other(group, 40)
    path_len = len(node_path(group.driver.root, _services[0]))
    # Room for 7 ops per multiRead: 40 paths make 6 multiReads.
    monkeypatch.setattr(zookeeper, "MULTI_READ_BUDGET", 7 * (path_len + MULTI_READ_OP_COST))
    spy = Spy(group.driver._client, monkeypatch)
    assert {s.service.uuid: s.state for s in group.get_all()} == expected
    sizes = [len(r.paths) for r in spy.sent("MultiRead")]
    assert sizes == [7, 7, 7, 7, 7, 5]
    assert spy.events == ["send:MultiRead"] * 6 + ["wait"] * 6
    assert not [e for e in spy.events if e.startswith("sync:")]


def test_multiread_gives_the_mtime_a_get_gives(zk_group, sqlite_url, raw, root):
    group = zk_group(sqlite_url)
    services, _expected = beat_every_other(group, 6)
    reading = group.driver.read(RecordSet(services, None))
    for i, svc in enumerate(services):
        if i % 2:
            assert reading.pulses[svc.uuid] == NEVER
            continue
        _data, stat = raw.get(node_path(root, svc))
        assert reading.pulses[svc.uuid].last_heartbeat == datetime.fromtimestamp(
            stat.mtime / 1000.0, UTC
        )


def test_a_server_without_multiread_makes_one_read_unknown_then_gets(
    zk_group, sqlite_url, monkeypatch
):
    """A ZooKeeper older than 3.6 answers an opcode it does not know UNIMPLEMENTED.

    The throwaway server is 3.8, so the driver is made to send an opcode no
    ZooKeeper knows: the server's answer is then exactly what an old one
    gives multiRead (UnimplementedRequestProcessor: the error, then it drops
    the connection).
    """
    group = zk_group(sqlite_url, service_down_time=READ_TEST_DOWN_TIME)
    _services, expected = beat_every_other(group, 5)
    monkeypatch.setattr(zookeeper.MultiRead, "type", 99)
    assert {s.state for s in bounded(group.get_all)} == {State.UNKNOWN}
    assert group.driver._multi_read is False
    spy = Spy(group.driver._client, monkeypatch)
    wait_for(lambda: {s.service.uuid: s.state for s in group.get_all()} == expected)
    assert "send:MultiRead" not in spy.events
    assert spy.events.count("send:GetData") >= 5


# -- clocks ------------------------------------------------------------------


def test_skewed_local_clocks_do_not_change_states(zk_group, sqlite_url):
    writer = zk_group(sqlite_url, clock=SkewedClock(3600))
    reader = zk_group(sqlite_url, clock=SkewedClock(-3600))
    svc = writer.register("host1", "nova-compute")
    reporter = writer.join(svc)
    wait_for(lambda: state(reader, svc) is State.UP)
    wait_for(lambda: state(writer, svc) is State.UP)
    # ZooKeeper's clock is this machine's real one: heartbeats are stamped now.
    heard = reader.get(svc).last_heartbeat
    assert abs((heard - datetime.now(UTC)).total_seconds()) < 60
    reporter.stop()
    wait_for(lambda: state(reader, svc) is State.DOWN)
    # Each process estimates ZooKeeper's clock from its own writes, to within
    # half a round trip, so the two may disagree for a few milliseconds at the
    # boundary; skew would make them disagree by an hour.
    lag_start = time.monotonic()
    wait_for(lambda: state(writer, svc) is State.DOWN, patience=1.0)
    print(f"writer agreed {1000 * (time.monotonic() - lag_start):.1f} ms after the reader")


# -- outages -----------------------------------------------------------------


def bounded(call: Callable[[], Any], limit: float = 15.0) -> Any:
    """Run `call`, failing (not hanging) the test if it never returns; re-raise what it raises."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append((True, call()))
        except BaseException as exc:
            box.append((False, exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), "call hung"
    ok, value = box[0]
    if not ok:
        raise value
    return value


def test_zookeeper_gone_is_unknown_not_down(zk_group, sqlite_url, zookeeper_server_private):
    server = zookeeper_server_private
    group = zk_group(sqlite_url, server=server, zookeeper__connect_timeout=0.5)
    services = [group.register(f"host{i}", "nova-compute") for i in range(3)]
    for svc in services:
        group.join(svc)
    wait_for(lambda: all(s.state is State.UP for s in group.get_all()))

    server.kill()
    wait_for(lambda: {s.state for s in bounded(group.get_all)} == {State.UNKNOWN})
    with pytest.raises(BackendError):
        bounded(lambda: group.heartbeat(services[0]))
    with pytest.raises(BackendError):
        group.health()

    server.start()
    wait_for(lambda: all(s.state is State.UP for s in group.get_all()), patience=20)


def test_zookeeper_down_at_start_up_is_not_fatal(make_group, sqlite_url, root):
    server = ZooKeeperServer()  # its port is chosen, nothing listens yet
    try:
        group = make_group(
            sqlite_url,
            driver="zk",
            zookeeper__hosts=[server.address],
            zookeeper__root=root,
            zookeeper__session_timeout=SESSION_TIMEOUT,
            zookeeper__connect_timeout=0.3,
        )
        assert isinstance(group.driver, ZooKeeperDriver)
        svc = group.register("host1", "nova-compute")
        assert state(group, svc) is State.UNKNOWN
        with pytest.raises(BackendError):
            group.heartbeat(svc)
        assert group.driver.describe()["state"] != "connected"
        group.join(svc)  # the reporter keeps trying
        server.start()
        wait_for(lambda: state(group, svc) is State.UP, patience=20)
    finally:
        server.cleanup()


# -- on PostgreSQL -----------------------------------------------------------


def test_on_postgresql(zk_group, postgresql_db):
    empty_tables(postgresql_db)
    group = zk_group(postgresql_db)
    services = [group.register(f"host{i}", "nova-compute") for i in range(5)]
    for svc in services:
        group.join(svc)
    wait_for(lambda: {s.state for s in group.get_all()} == {State.UP})
    group.leave(services[0])
    assert [s.state for s in group.get_all(host="host0")] == [State.DOWN]
    group.delete(services[1])
    assert {s.state for s in group.get_all(state="up")} == {State.UP}
    assert len(group.get_all(state="up")) == 3
