"""What the fault tests share: backends that can be broken on demand, a daemon, a fleet.

A `Target` is one liveness backend with the two halves of an outage
(`break_()`, `mend()`), the options that point a ServiceGroup (and a real
daemon) at it, and the records database. Outages are real: kill -9 of a
throwaway server (ZooKeeper, memcached, the test's own PostgreSQL) and its
restart on the same port, or a TCP proxy refusing connections where the
server is shared (the machine's Redis).

Figures are printed (pytest -s, or the captured output of a failure) and
never asserted on, except where the issue states a bound.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from servicegroup import ServiceGroup, State
from servicegroup.exceptions import BackendError
from servicegroup.reporter import Reporter
from tests.conftest import sqlite_db
from tests.functional.daemon import Daemon, config_text, free_port

PATIENCE = 20.0  # hang guard for polling, never a performance bound


def figure(name: str, value: float | str, unit: str = "s") -> None:
    """One measured figure, in a greppable form: FIGURE <name> = <value><unit>."""
    shown = f"{value:.3f}" if isinstance(value, float) else value
    print(f"FIGURE {name} = {shown}{unit if isinstance(value, float) else ''}")


def wait_for(predicate: Callable[[], bool], what: str, patience: float = PATIENCE) -> float:
    """Poll until true; the seconds it took."""
    start = time.monotonic()
    deadline = start + patience
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"timed out after {patience}s waiting for {what}")


@dataclass
class Target:
    name: str
    records_url: str
    options: dict[str, Any]
    break_: Callable[[], None]
    mend: Callable[[], None]
    # The records database itself goes away (db driver): reads raise instead
    # of answering "unknown".
    records_break: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def make_target(
    name: str, request: pytest.FixtureRequest, tmp_path: Path, timeout: float = 0.5
) -> Target:
    """A backend named like the conformance suite's, on servers this test may break."""
    tag = uuid.uuid4().hex[:10]
    if name == "db-postgresql":
        server = request.getfixturevalue("postgresql_server_private")
        return Target(
            name,
            server.url,
            {"driver": "db", "database__connect_timeout": timeout},
            server.kill,
            server.start,
            records_break=True,
            extra={"server": server},
        )
    records = sqlite_db(tmp_path)
    if name == "zookeeper":
        server = request.getfixturevalue("zookeeper_server_private")
        options = {
            "driver": "zookeeper",
            "zookeeper__hosts": [server.address],
            "zookeeper__root": f"/sg-{tag}",
            "zookeeper__session_timeout": 1.0,
            "zookeeper__connect_timeout": timeout,
        }
        return Target(name, records, options, server.kill, server.start, extra={"server": server})
    if name == "memcached":
        server = request.getfixturevalue("memcached_server_private")
        options = {
            "driver": "memcached",
            "memcached__servers": [server.address],
            "memcached__key_prefix": f"sg-{tag}:",
            "memcached__socket_timeout": timeout,
            "memcached__connect_timeout": timeout,
        }
        return Target(name, records, options, server.kill, server.start, extra={"server": server})
    if name == "tooz-redis":
        redis_url = request.getfixturevalue("redis_url")
        proxy = request.getfixturevalue("proxy")(redis_url.split("//", 1)[1])
        options = {
            "driver": "tooz",
            "tooz__backend_url": f"redis://{proxy.address}?namespace=sg-{tag}",
            "tooz__request_timeout": timeout,
        }
        return Target(
            name, records, options, proxy.refuse, proxy.passthrough, extra={"proxy": proxy}
        )
    raise AssertionError(name)


@contextlib.contextmanager
def daemon(tmp_path: Path, url: str, options: dict[str, Any]) -> Iterator[Daemon]:
    """The real daemon, as a subprocess, on the same backend as the test."""
    port = free_port()
    config = tmp_path / f"daemon-{port}.conf"
    config.write_text(config_text(url, port, options))
    proc = Daemon(config, port, tmp_path / f"daemon-{port}.log").start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def healthz(proc: Daemon, timeout: float = 5.0) -> int:
    """The /healthz status, or 0 if the daemon itself did not answer in time."""
    try:
        return httpx.get(f"{proc.url}/healthz", timeout=timeout).status_code
    except httpx.TransportError:
        return 0


def scrape(proc: Daemon, timeout: float = 5.0) -> dict[str, float]:
    """/metrics parsed; AssertionError unless it is a valid 200 scrape."""
    response = httpx.get(f"{proc.url}/metrics", timeout=timeout)
    assert response.status_code == 200, response.text
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def backend_up(samples: dict[str, float]) -> float:
    [value] = [v for k, v in samples.items() if k.startswith("servicegroup_backend_up{")]
    return value


def states(sg: ServiceGroup) -> dict[str, State] | None:
    """uuid -> state, or None when the records database itself cannot be read."""
    try:
        return {s.service.uuid: s.state for s in sg.get_all()}
    except BackendError:
        return None


def all_up(sg: ServiceGroup, count: int) -> bool:
    found = states(sg)
    return found is not None and len(found) == count and set(found.values()) == {State.UP}


def reporter_lines(
    caplog: pytest.LogCaptureFixture, reporter: Reporter, since: int = 0, until: int | None = None
) -> tuple[int, int]:
    """(lost, recovered) log lines about this reporter's service, in caplog.records[since:until]."""
    svc = reporter.service
    suffix = f" {svc.binary} on {svc.host}"
    lost = recovered = 0
    for record in caplog.records[since:until]:
        if record.name != "servicegroup.reporter" or record.levelno < logging.INFO:
            continue
        message = record.getMessage()
        if message.startswith("lost connection") and f"reporting{suffix}:" in message:
            lost += 1
        elif message.startswith("recovered connection") and f"for{suffix} after" in message:
            recovered += 1
    return lost, recovered
