"""Scenario 4: ZooKeeper session expiry, forced, under N services.

test_zookeeper.py proves the mechanisms for a handful of nodes; this runs
them at fleet size and measures: every node re-created and every service up
within one report_interval of the reconnection, and a restart of all N
services inside the old session's lifetime up at once, staying up when that
old session finally expires.
"""

from __future__ import annotations

import threading
import time

import pytest
from kazoo.client import KazooClient, KazooState

from servicegroup import State
from tests.functional import faultkit as fk
from tests.functional.test_zookeeper import expire_session, node_path, session_of

FLEET = 50
INTERVAL = 0.2
DOWN_TIME = 1.0
SESSION = 1.0
# Polling granularity and one pipelined read of 50 nodes: what the
# "within one report_interval" check may add, never a performance bound.


@pytest.fixture
def raw(zookeeper_server):
    client = KazooClient(hosts=zookeeper_server.address, timeout=5)
    client.start(10)
    yield client
    client.stop()
    client.close()


def zk_options(server, root: str) -> dict:
    return {
        "driver": "zookeeper",
        "report_interval": INTERVAL,
        "service_down_time": DOWN_TIME,
        "zookeeper__hosts": [server.address],
        "zookeeper__root": root,
        "zookeeper__session_timeout": SESSION,
        "zookeeper__connect_timeout": 1.0,
    }


@pytest.mark.timeout(60)
def test_fleet_comes_back_within_one_interval_of_reconnecting(
    zookeeper_server, raw, make_group, sqlite_url
):
    root = "/sg-expiry-fleet"
    sg = make_group(sqlite_url, **zk_options(zookeeper_server, root))
    reader = make_group(sqlite_url, **zk_options(zookeeper_server, root))  # another process
    services = [sg.register(f"host-{i:02d}", "zk-fleet") for i in range(FLEET)]
    for svc in services:
        sg.join(svc)
    fk.wait_for(lambda: fk.all_up(reader, FLEET), "the whole fleet up")
    old_session = session_of(sg)
    reconnected = threading.Event()
    reconnected_at: list[float] = []

    def listener(state: str) -> None:
        if state == KazooState.CONNECTED and session_of(sg) != old_session:
            reconnected_at.append(time.monotonic())
            reconnected.set()

    sg.driver._client.add_listener(listener)
    expire_session(zookeeper_server.address, sg.driver._client.client_id)
    expired_at = time.monotonic()
    assert reconnected.wait(20), "no new session"

    def recreated() -> bool:
        owners = [raw.exists(node_path(root, svc)) for svc in services]
        return all(s is not None and s.ephemeralOwner != old_session for s in owners)

    fk.wait_for(recreated, "every node re-created")
    nodes_back = time.monotonic() - reconnected_at[0]
    fk.wait_for(lambda: fk.all_up(reader, FLEET), "every service up again")
    up_after_reconnect = time.monotonic() - reconnected_at[0]

    fk.figure("zookeeper.expiry_to_new_session", reconnected_at[0] - expired_at)
    fk.figure(f"zookeeper.reconnect_to_{FLEET}_nodes_recreated", nodes_back)
    fk.figure(f"zookeeper.reconnect_to_{FLEET}_up_for_another_reader", up_after_reconnect)
    # Within one report interval of reconnecting is a figure, never asserted.


@pytest.mark.timeout(60)
def test_fleet_restarted_within_the_old_session_stays_up(
    zookeeper_server, raw, make_group, sqlite_url
):
    root = "/sg-expiry-restart"
    old = make_group(sqlite_url, **zk_options(zookeeper_server, root))
    services = [old.register(f"host-{i:02d}", "zk-fleet") for i in range(FLEET)]
    for svc in services:
        old.heartbeat(svc)  # then the old process freezes with its session alive
    old_session = session_of(old)

    new = make_group(sqlite_url, **zk_options(zookeeper_server, root))
    for svc in services:
        new.join(svc)
    up_at_once = fk.wait_for(lambda: fk.all_up(new, FLEET), "the restarted fleet up")
    owners = {raw.exists(node_path(root, svc)).ephemeralOwner for svc in services}
    assert owners == {session_of(new)}

    expire_session(zookeeper_server.address, old.driver._client.client_id)  # old session ends
    gone = time.monotonic()
    watched: set[State] = set()
    while time.monotonic() - gone < 2 * SESSION:
        watched |= {s.state for s in new.get_all()}
        time.sleep(0.05)
    fk.figure(f"zookeeper.restart_of_{FLEET}_to_all_up", up_at_once)
    fk.figure("zookeeper.states_after_old_session_expired", str(sorted(watched)), "")
    assert session_of(new) != old_session
    assert watched == {State.UP}, f"states seen after the old session expired: {watched}"
    assert all(raw.exists(node_path(root, svc)) is not None for svc in services)
