"""Scenario 2: a black-holed backend (connections accepted, nothing ever answered).

A refused connection fails at once; a black hole is where a client without
its own timeouts waits for ever, and a liveness service that hangs takes its
schedulers with it. Every call must come back within its configured timeouts
(the bound asserted is generous: a few timeouts plus a second, a correctness
bound, not a performance one), every background thread keeps turning, and the
daemon says 503.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from servicegroup import ServiceGroup
from servicegroup.exceptions import BackendError
from tests.conftest import empty_tables, sqlite_db
from tests.functional import faultkit as fk

TIMEOUT = 0.5  # every connect/socket/request/query timeout in these tests
LIBPQ_MIN_CONNECT = 2.0  # libpq (and psycopg) raise any connect_timeout below 2 s to 2 s
# Generous: one connect plus one statement deadline, a retry, and scheduling.
BOUND = LIBPQ_MIN_CONNECT + 2 * TIMEOUT + 1.0
INTERVAL = 0.1
DOWN_TIME = 1.0


def through_proxy(request: pytest.FixtureRequest, tmp_path, name: str):
    """(records url, options, proxy) with the liveness backend behind a fresh proxy."""
    make_proxy = request.getfixturevalue("proxy")
    tag = uuid.uuid4().hex[:10]
    if name in ("db-postgresql", "db-mysql"):
        url = request.getfixturevalue(f"{name[3:]}_db")
        empty_tables(url)
        parsed = make_url(url)
        proxy = make_proxy(f"{parsed.host}:{parsed.port or 5432}")
        url = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        return url, {"driver": "db"}, proxy
    records = sqlite_db(tmp_path)
    if name == "zookeeper":
        proxy = make_proxy(request.getfixturevalue("zookeeper_server").address)
        return (
            records,
            {
                "driver": "zookeeper",
                "zookeeper__hosts": [proxy.address],
                "zookeeper__root": f"/sg-{tag}",
                "zookeeper__session_timeout": 2.0,
                "zookeeper__connect_timeout": TIMEOUT,
            },
            proxy,
        )
    if name == "memcached":
        proxy = make_proxy(request.getfixturevalue("memcached_server").address)
        return (
            records,
            {
                "driver": "memcached",
                "memcached__servers": [proxy.address],
                "memcached__key_prefix": f"sg-{tag}:",
                "memcached__socket_timeout": TIMEOUT,
                "memcached__connect_timeout": TIMEOUT,
            },
            proxy,
        )
    if name == "tooz-redis":
        redis_url = request.getfixturevalue("redis_url")
        proxy = make_proxy(redis_url.split("//", 1)[1])
        return (
            records,
            {
                "driver": "tooz",
                "tooz__backend_url": f"redis://{proxy.address}?namespace=sg-{tag}",
                "tooz__request_timeout": TIMEOUT,
            },
            proxy,
        )
    raise AssertionError(name)


def timed(call: Callable[[], Any], bound: float) -> tuple[float, str]:
    """Run call on a thread; (seconds, outcome). A call still running after 3 x bound is a hang."""
    outcome: list[str] = []

    def run() -> None:
        try:
            call()
            outcome.append("ok")
        except BackendError as exc:
            outcome.append(f"BackendError({exc.backend})")
        except Exception as exc:  # anything else is reported as it is
            outcome.append(f"{type(exc).__name__}: {exc}")

    start = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(3 * bound)
    took = time.monotonic() - start
    return took, outcome[0] if outcome else "HANG"


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "name", ["db-postgresql", "db-mysql", "zookeeper", "memcached", "tooz-redis"]
)
def test_black_hole_never_hangs(name, request, tmp_path, make_group):
    url, options, proxy = through_proxy(request, tmp_path, name)
    options = {
        "report_interval": INTERVAL,
        "service_down_time": DOWN_TIME,
        "database__connect_timeout": TIMEOUT,
        "database__query_timeout": TIMEOUT,
        **options,
    }
    sg: ServiceGroup = make_group(url, **options)
    svc = sg.register("host-1", "blackholed")
    reporter = sg.join(svc)
    fk.wait_for(lambda: fk.all_up(sg, 1), "the service up")
    with fk.daemon(tmp_path, url, options) as proc:
        proxy.blackhole()
        codes: list[int] = []
        healthz_took, _ = timed(lambda: codes.append(fk.healthz(proc, timeout=3 * BOUND)), BOUND)
        calls = {
            "beat": lambda: sg.heartbeat(svc),
            "get_all": lambda: sg.get_all(),
            "health": lambda: sg.health(),
        }
        results = {what: timed(call, BOUND) for what, call in calls.items()}
        attempts = reporter.beats + reporter.total_failures
        turned = fk.wait_for(
            lambda: reporter.beats + reporter.total_failures > attempts + 1,
            "the reporter to keep trying",
            patience=3 * BOUND,
        )
        metrics_took, _ = timed(lambda: fk.scrape(proc, timeout=3 * BOUND), BOUND)
        proxy.passthrough()
        fk.wait_for(lambda: fk.all_up(sg, 1), "the service up after the black hole")

    for what, (took, outcome) in results.items():
        fk.figure(f"{name}.blackhole.{what}", took)
        print(f"{name}: {what} -> {outcome}")
    fk.figure(f"{name}.blackhole.healthz", healthz_took)
    fk.figure(f"{name}.blackhole.metrics", metrics_took)
    fk.figure(f"{name}.blackhole.reporter_two_more_attempts", turned)
    assert codes == [503], f"/healthz behind a black hole answered {codes}"
    for what, (_took, outcome) in results.items():
        assert outcome != "HANG", f"{what} hung behind a black hole"
    # How long each took is a figure above; a hang (3 x the bound) is the failure.
    assert reporter.alive
