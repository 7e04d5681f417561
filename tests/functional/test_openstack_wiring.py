"""doc/operations.md's "Wiring into an OpenStack cloud", run end to end.

Each part of issue 21 has its own tests; this one wires them together as
the walk-through does, against the real servers a cloud has: a Keystone
(tests/keystone_server.py) and a RabbitMQ (tests/servers.py). One daemon
takes Keystone tokens, sends its events as notifications on the bus, and
judges nova-conductor by a down time of its own. On that daemon:

- an agent that signs in with an openrc's OS_* variables and was given no
  --interval beats at nova-conductor's report_interval, and stays up;
- a scheduler-like client (Client with a keystoneauth1 session) registers a
  nova-compute, reads the fleet, and asks with its own threshold;
- an oslo.messaging listener of the cloud hears the registrations, then the
  conductor's death once its agent is killed, after the conductor's down
  time, while the equally silent compute host is still up by its binary's.

The configuration is the walk-through's, with loopback addresses and no TLS.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from keystoneauth1.identity import v3
from keystoneauth1.session import Session

from servicegroup.client import Client
from servicegroup.exceptions import Forbidden
from servicegroup.service import State
from tests.functional.daemon import Daemon, free_port
from tests.functional.test_daemon import migrated_sqlite
from tests.helpers import wait_for
from tests.keystone_server import Keystone, keystone_or_fail
from tests.notification_listener import Collector, listening
from tests.servers import RabbitMQServer

SCRIPT = Path(sys.executable).parent / "servicegroup"
PASSWORD = "wiring-secret-81f"
CONDUCTOR_DOWN_TIME = 3.0
CONDUCTOR_REPORT_INTERVAL = 0.5


@dataclass
class Cloud:
    keystone: Keystone
    fleet: str  # the project whose tokens the daemon accepts
    daemon: Daemon
    heard: Collector  # what the cloud's listener heard, in order

    def session(self, user: str) -> Session:
        auth = v3.Password(
            auth_url=self.keystone.url,
            username=user,
            password=PASSWORD,
            user_domain_name="Default",
            project_name="fleet",
            project_domain_name="Default",
        )
        return Session(auth=auth)

    def openrc(self, user: str) -> dict[str, str]:
        return self.keystone.openrc(user, PASSWORD, "fleet")


def config_text(
    tmp: Path, port: int, keystone: Keystone, fleet: str, rabbit: str, topic: str
) -> str:
    """The walk-through's /etc/servicegroup/servicegroup.conf, on loopback."""
    return f"""
[DEFAULT]
service_down_time = 60
report_interval = 10

[binaries]
service_down_time = nova-conductor:{CONDUCTOR_DOWN_TIME:g}
report_interval = nova-conductor:{CONDUCTOR_REPORT_INTERVAL:g}

[database]
connection = {migrated_sqlite(tmp / "servicegroup.sqlite")}

[events]
sweep_interval = 0.1

[api]
host = 127.0.0.1
port = {port}
auth_strategy = keystone

[keystone_authtoken]
auth_type = password
auth_url = {keystone.url}
username = servicegroup
password = {PASSWORD}
user_domain_name = Default
project_name = service
project_domain_name = Default
accepted_project_id = {fleet}

[notifications]
driver = messagingv2
transport_url = {rabbit}
topics = {topic}

[oslo_messaging_rabbit]
amqp_durable_queues = true
"""


@pytest.fixture(scope="module")
def cloud(
    tmp_path_factory: pytest.TempPathFactory, rabbitmq_server: RabbitMQServer
) -> Iterator[Cloud]:
    tmp = tmp_path_factory.mktemp("openstack-wiring")
    with keystone_or_fail(tmp) as keystone:
        # The walk-through's step 1, as `openstack user create` / `role add` would.
        keystone.user("servicegroup", PASSWORD, keystone.project("service"), "service")
        fleet = keystone.project("fleet")
        keystone.user("nova", PASSWORD, fleet, "service")
        keystone.user("scheduler", PASSWORD, fleet, "reader")
        topic = f"notifications-{uuid.uuid4().hex[:8]}"
        port = free_port()
        config = tmp / "servicegroup.conf"
        config.write_text(config_text(tmp, port, keystone, fleet, rabbitmq_server.url, topic))
        with listening(str(config), rabbitmq_server.url, topic) as heard:
            daemon = Daemon(config, port, tmp / "daemon.log").start()
            try:
                daemon.wait_ready()
                yield Cloud(keystone, fleet, daemon, heard)
            finally:
                daemon.stop()
            assert "Traceback" not in daemon.log(), daemon.log()


def test_a_cloud_wired_as_the_walk_through_says(cloud: Cloud, tmp_path: Path) -> None:
    # An agent next to nova-conductor: an openrc's credentials, no --interval.
    log_file = tmp_path / "agent.log"
    argv = [
        str(SCRIPT), "agent", "--daemon-url", cloud.daemon.url, "--auth-strategy", "keystone",
        "--host", "conductor-1", "--binary", "nova-conductor", "--check", "true",
    ]  # fmt: skip
    with open(log_file, "wb") as log:
        agent = subprocess.Popen(argv, stdout=log, stderr=log, env=cloud.openrc("nova"))
    try:
        scheduler = Client(cloud.daemon.url, keystone_session=cloud.session("scheduler"))
        nova = Client(cloud.daemon.url, keystone_session=cloud.session("nova"))
        with scheduler, nova:
            compute = nova.register("compute-1", "nova-compute")
            nova.heartbeat(compute)
            conductor = wait_for(
                lambda: next(
                    (
                        s
                        for s in scheduler.get_all("nova-conductor")
                        if s.service.host == "conductor-1"
                    ),
                    None,
                ),
                "the agent registered conductor-1",
            ).service
            assert nova.times_of("nova-conductor").report_interval == CONDUCTOR_REPORT_INTERVAL
            wait_for(
                lambda: f"checking every {CONDUCTOR_REPORT_INTERVAL:g}s" in log_file.read_text(),
                "the agent's log naming its binary's interval",
            )

            # Beating at 0.5 s keeps it up past its 3 s down time: the agent's
            # default interval would not.
            first = wait_for(
                lambda: scheduler.get(conductor).last_heartbeat, "conductor-1's first beat"
            )
            wait_for(
                lambda: (
                    (status := scheduler.get(conductor)).state is State.UP
                    and status.last_heartbeat is not None
                    and (status.last_heartbeat - first).total_seconds() > CONDUCTOR_DOWN_TIME
                ),
                "conductor-1 beating, up, for longer than its down time",
                patience=30,
            )
            # Registered (down until its first beat), then up: each told once, in order.
            born = [("servicegroup.service.create", "down"), ("servicegroup.service.update", "up")]
            wait_for(lambda: cloud.heard.about("conductor-1") == born, "the bus told of it")
            wait_for(lambda: cloud.heard.about("compute-1") == born, "the bus told of compute-1")

            # A reader reads, and cannot write.
            with pytest.raises(Forbidden):
                scheduler.heartbeat(compute)

            # The conductor dies; the compute host is as silent from now on.
            agent.send_signal(signal.SIGKILL)
            agent.wait(10)
            wait_for(
                lambda: ("servicegroup.service.update", "down") in cloud.heard.about("conductor-1"),
                "the bus told of conductor-1's death",
                patience=30,
            )
            assert scheduler.get(conductor).state is State.DOWN
            # compute-1 has been silent for as long, and nova-compute waits 60 s.
            assert scheduler.get(compute).state is State.UP
            assert cloud.heard.about("compute-1") == born
            assert cloud.heard.about("conductor-1") == [
                *born,
                ("servicegroup.service.update", "down"),
            ]
            # A scheduler that wants to avoid a silent host sooner asks with its own threshold.
            assert scheduler.get(compute, down_time=0.5).state is State.DOWN
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
    text = log_file.read_text()
    assert PASSWORD not in text and "gAAAAA" not in text, text  # no secret in the agent's log
