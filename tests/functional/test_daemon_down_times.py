"""The daemon with [binaries] times, GET /v1/binaries/{binary}/times, and ?down_time=, end
to end.

A real `servicegroup serve` in a subprocess over SQLite; states are polled
with a deadline (tests/helpers.wait_for), never timed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from servicegroup.client import Client
from servicegroup.exceptions import InvalidInput
from tests.functional.daemon import Daemon, config_text, free_port
from tests.functional.test_daemon import assert_error, migrated_sqlite
from tests.helpers import wait_for

OPTIONS = {
    "report_interval": 0.1,
    "service_down_time": 30.0,
    "binaries__service_down_time": "quick:0.5",
    "binaries__report_interval": "quick:0.05",
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("down-times")
    url = migrated_sqlite(tmp / "sg.sqlite")
    port = free_port()
    config = tmp / "servicegroup.conf"
    config.write_text(config_text(url, port, OPTIONS))
    proc = Daemon(config, port, tmp / "daemon.log").start()
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()
    assert "Traceback" not in proc.log(), proc.log()


@pytest.fixture
def http(daemon: Daemon) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=daemon.url, timeout=10.0) as client:
        yield client


def register(http: httpx.Client, host: str, binary: str) -> str:
    response = http.post("/v1/services", json={"host": host, "binary": binary})
    assert response.status_code in (200, 201), response.text
    sid: str = response.json()["id"]
    assert http.post(f"/v1/services/{sid}/heartbeat").status_code == 204
    return sid


def state(http: httpx.Client, sid: str, **params: Any) -> str:
    response = http.get(f"/v1/services/{sid}", params=params)
    assert response.status_code == 200, response.text
    found: str = response.json()["state"]
    return found


def service_up(http: httpx.Client) -> dict[str, float]:
    text = http.get("/metrics").text
    families = {f.name: f.samples for f in text_string_to_metric_families(text)}
    return {s.labels["binary"]: s.value for s in families["servicegroup_service_up"]}


def test_each_binary_by_its_own_down_time_and_a_query_by_its_own(
    http: httpx.Client, daemon: Daemon
) -> None:
    quick = register(http, "host-1", "quick")
    patient = register(http, "host-1", "patient")
    wait_for(lambda: state(http, quick) == "down", "the quick binary's service to go down")
    assert state(http, patient) == "up"  # 30 s to spare
    assert service_up(http) == {"quick": 0.0, "patient": 1.0}

    wait_for(lambda: state(http, patient, down_time=0.2) == "down", "a query's quick threshold")
    listed = http.get("/v1/services", params={"down_time": 0.2, "binary": "patient"}).json()
    assert [s["state"] for s in listed["services"]] == ["down"]
    # A long threshold calls the quick binary's silent service up again, for this answer.
    assert state(http, quick, down_time="3600") == "up"
    ups = http.get("/v1/services", params={"down_time": 3600, "state": "up"}).json()
    assert {s["binary"] for s in ups["services"]} == {"quick", "patient"}
    # The query's answers leave everyone else's alone: the list, the service, the metrics.
    plain = http.get("/v1/services", params={"binary": "patient"}).json()["services"]
    assert [s["state"] for s in plain] == ["up"]
    assert state(http, patient) == "up"
    assert service_up(http) == {"quick": 0.0, "patient": 1.0}

    with Client(daemon.url) as client:  # the HTTP client, method for method as in-process
        assert client.is_up(patient) and not client.is_up(patient, down_time=0.2)
        assert client.get(patient, down_time=0.2).state.value == "down"
        assert [s.state.value for s in client.get_all(binary="patient", down_time=0.2)] == ["down"]
        with pytest.raises(InvalidInput) as info:
            client.get_all(down_time=0)
        assert info.value.field == "down_time"


def test_times_tell_each_binarys_own_and_the_defaults(http: httpx.Client, daemon: Daemon) -> None:
    quick = http.get("/v1/binaries/quick/times")
    assert quick.status_code == 200, quick.text
    assert quick.json() == {"binary": "quick", "report_interval": 0.05, "service_down_time": 0.5}
    # No [binaries] entry, even no service: [DEFAULT]'s.
    other = http.get("/v1/binaries/nova%2Fcompute/times").json()
    assert other == {"binary": "nova/compute", "report_interval": 0.1, "service_down_time": 30.0}
    with Client(daemon.url) as client:
        assert client.times_of("quick").as_dict() == quick.json()


@pytest.mark.parametrize(
    "binary", ["", "%20padded", "bad%0Aname", "bad%00name", "%E2%80%AEbidi", "b" * 256]
)
def test_times_of_a_bad_binary_is_400_naming_it(http: httpx.Client, binary: str) -> None:
    response = http.get(f"/v1/binaries/{binary}/times")
    assert_error(response, 400, "binary")
    assert response.json()["error"]["message"].startswith("binary: ")


def test_times_are_a_read(tmp_path: Path) -> None:
    """With read tokens, no token is 401 and a read token will do, as for GET /v1/services."""
    url = migrated_sqlite(tmp_path / "sg.sqlite")
    port = free_port()
    config = tmp_path / "servicegroup.conf"
    config.write_text(config_text(url, port, {**OPTIONS, "api__read_tokens": ["reader-1f3a"]}))
    proc = Daemon(config, port, tmp_path / "daemon.log").start()
    try:
        proc.wait_ready()
        assert_error(httpx.get(f"{proc.url}/v1/binaries/quick/times"), 401)
        with Client(proc.url, "reader-1f3a") as reader:
            assert reader.times_of("quick").report_interval == 0.05
    finally:
        proc.stop()


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-inf", "1e12"])
def test_a_down_time_out_of_range_is_400_naming_it(http: httpx.Client, value: str) -> None:
    sid = register(http, "host-bad", "quick")
    for path in ("/v1/services", f"/v1/services/{sid}"):
        assert_error(http.get(path, params={"down_time": value}), 400, "down_time")


@pytest.mark.parametrize("value", ["abc", "", "1s", "true"])
def test_a_down_time_that_is_not_a_number_is_422_naming_it(http: httpx.Client, value: str) -> None:
    sid = register(http, "host-bad", "quick")
    for path in ("/v1/services", f"/v1/services/{sid}"):
        assert_error(http.get(path, params={"down_time": value}), 422, "down_time")


def test_a_config_with_a_bad_binary_time_refuses_to_start(tmp_path: Path) -> None:
    url = migrated_sqlite(tmp_path / "sg.sqlite")
    port = free_port()
    config = tmp_path / "servicegroup.conf"
    config.write_text(
        config_text(url, port, {**OPTIONS, "binaries__service_down_time": "quick:0.1"})
    )
    proc = Daemon(config, port, tmp_path / "daemon.log").start()
    try:
        code = proc.wait_exit()
    finally:
        proc.stop()
    assert code != 0
    log = proc.log()
    assert "[binaries] service_down_time quick (0.1s) must be greater than 2 x" in log
    assert "Traceback" not in log
