"""End to end: the real daemon in a subprocess, spoken to over HTTP.

State changes are polled with a deadline, never timed: the only clock that
matters is the daemon's, and CI machines are slow in bursts.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from servicegroup import ServiceGroup
from servicegroup.db import migration
from servicegroup.db.engine import make_engine
from tests.functional.daemon import Daemon, config_text, free_port, write_config

TIMINGS = {"report_interval": 0.1, "service_down_time": 0.5}
DEADLINE = 10.0
SERVICE_KEYS = {
    "id",
    "host",
    "binary",
    "topic",
    "availability_zone",
    "version",
    "disabled",
    "disabled_reason",
    "forced_down",
    "state",
    "last_heartbeat",
    "report_count",
    "created_at",
    "updated_at",
}


def migrated_sqlite(path: Path) -> str:
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    migration.upgrade(engine)
    engine.dispose()
    return url


def start_daemon(tmp: Path, db_url: str, **defaults: object) -> Daemon:
    port = free_port()
    config = write_config(tmp / "servicegroup.conf", db_url, port, **{**TIMINGS, **defaults})
    return Daemon(config, port, tmp / "daemon.log").start()


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return migrated_sqlite(tmp_path_factory.mktemp("db") / "sg.sqlite")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, db_url: str) -> Iterator[Daemon]:
    proc = start_daemon(tmp_path_factory.mktemp("daemon"), db_url)
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()
    assert "Traceback" not in proc.log(), proc.log()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=daemon.url, timeout=10.0) as http:
        yield http


def unique(prefix: str) -> str:
    """Names per test, so tests sharing one daemon never see each other's services."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def register(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/services", json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


def eventually(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"never happened within {DEADLINE}s: {what}")


def beat_then_get(client: httpx.Client, sid: str) -> dict[str, Any]:
    assert client.post(f"/v1/services/{sid}/heartbeat").status_code == 204
    return client.get(f"/v1/services/{sid}").json()


def assert_error(response: httpx.Response, status: int, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == status
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["error"]["field"] == field
    assert "Traceback" not in response.text


def test_healthz_reports_driver_and_backend(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["driver"] == "db"
    assert response.json()["backend"] == "database"


def test_register_is_201_then_200_with_the_same_id(client: httpx.Client) -> None:
    host = unique("host")
    first = client.post("/v1/services", json={"host": host, "binary": "nova-compute"})
    again = client.post("/v1/services", json={"host": host, "binary": "nova-compute", "version": 7})
    assert first.status_code == 201
    assert again.status_code == 200
    assert set(first.json()) == SERVICE_KEYS
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["version"] == 7
    assert first.json()["state"] == "down"
    assert first.json()["last_heartbeat"] is None
    assert first.json()["created_at"].endswith("Z")


def test_heartbeat_makes_it_up_and_silence_makes_it_down(client: httpx.Client) -> None:
    sid = register(client, host=unique("host"), binary="b")["id"]
    up = eventually(lambda: beat_then_get(client, sid)["state"] == "up", "up after a beat")
    assert up
    service = client.get(f"/v1/services/{sid}").json()
    assert service["report_count"] >= 1
    assert service["last_heartbeat"] is not None
    eventually(
        lambda: client.get(f"/v1/services/{sid}").json()["state"] == "down",
        "down after service_down_time without beats",
    )


def test_get_accepts_any_uuid_spelling(client: httpx.Client) -> None:
    sid = register(client, host=unique("host"), binary="b")["id"]
    response = client.get(f"/v1/services/{sid.upper()}")
    assert response.status_code == 200
    assert response.json()["id"] == sid


def test_list_filters_by_fields_and_state(client: httpx.Client) -> None:
    binary = unique("bin")
    alive = register(client, host="alive", binary=binary, topic="t1", availability_zone="az1")
    register(client, host="silent", binary=binary, topic="t2")

    def listing(**params: str) -> list[dict[str, Any]]:
        response = client.get("/v1/services", params={"binary": binary, **params})
        assert response.status_code == 200, response.text
        return response.json()["services"]

    assert sorted(s["host"] for s in listing()) == ["alive", "silent"]
    assert [s["host"] for s in listing(topic="t2")] == ["silent"]
    assert [s["host"] for s in listing(availability_zone="az1")] == ["alive"]
    assert [s["host"] for s in listing(host="silent")] == ["silent"]
    assert [s["host"] for s in listing(state="down", host="silent")] == ["silent"]

    def only_alive_is_up() -> bool:
        beat_then_get(client, alive["id"])
        return [s["host"] for s in listing(state="up")] == ["alive"]

    eventually(only_alive_is_up, "state=up lists only the beating service")
    assert all(set(s) == SERVICE_KEYS for s in listing())
    assert_error(client.get("/v1/services", params={"state": "sideways"}), 400, "state")
    assert_error(client.get("/v1/services", params={"host": ""}), 400, "host")


def test_patch_forced_down_and_disabled(client: httpx.Client) -> None:
    sid = register(client, host=unique("host"), binary="b")["id"]

    forced = client.patch(f"/v1/services/{sid}", json={"forced_down": True})
    assert forced.status_code == 200
    assert forced.json()["forced_down"] is True
    assert beat_then_get(client, sid)["state"] == "down"

    client.patch(f"/v1/services/{sid}", json={"forced_down": False})
    disabled = client.patch(
        f"/v1/services/{sid}", json={"disabled": True, "disabled_reason": "maintenance"}
    )
    assert disabled.status_code == 200
    assert disabled.json()["disabled_reason"] == "maintenance"

    def up_while_disabled() -> bool:
        service = beat_then_get(client, sid)
        return service["disabled"] is True and service["state"] == "up"

    eventually(up_while_disabled, "a disabled service that beats is still up")


def test_patch_rejects_bad_values_and_writes_nothing(client: httpx.Client) -> None:
    sid = register(client, host=unique("host"), binary="b", version=3)["id"]
    before = client.get(f"/v1/services/{sid}").json()

    negative = client.patch(f"/v1/services/{sid}", json={"disabled": True, "version": -1})
    assert_error(negative, 400, "version")
    assert "non-negative" in negative.json()["error"]["message"]
    too_long = client.patch(f"/v1/services/{sid}", json={"disabled_reason": "x" * 256})
    assert_error(too_long, 400, "disabled_reason")
    assert_error(client.patch(f"/v1/services/{sid}", json={"disabled": "yes"}), 422, "disabled")
    assert_error(client.patch(f"/v1/services/{sid}", json={"forced_down": 1}), 422, "forced_down")
    assert_error(client.patch(f"/v1/services/{sid}", json={"version": "5"}), 422, "version")

    after = client.get(f"/v1/services/{sid}").json()
    assert after["disabled"] is False
    assert after["version"] == 3
    assert after["updated_at"] == before["updated_at"]


def test_delete_then_404_everywhere(client: httpx.Client) -> None:
    host = unique("host")
    sid = register(client, host=host, binary="b")["id"]
    assert client.post(f"/v1/services/{sid}/heartbeat").status_code == 204

    assert client.delete(f"/v1/services/{sid}").status_code == 204
    assert_error(client.get(f"/v1/services/{sid}"), 404)
    assert_error(client.post(f"/v1/services/{sid}/heartbeat"), 404)
    assert_error(client.patch(f"/v1/services/{sid}", json={"disabled": True}), 404)
    assert_error(client.delete(f"/v1/services/{sid}"), 404)
    assert client.get("/v1/services", params={"host": host}).json() == {"services": [], "total": 0}

    again = client.post("/v1/services", json={"host": host, "binary": "b"})
    assert again.status_code == 201
    assert again.json()["id"] != sid


def test_heartbeat_after_delete_by_another_process_is_404(
    client: httpx.Client, db_url: str
) -> None:
    """The daemon's uuid->Service cache must not outlive the record."""
    sid = register(client, host=unique("host"), binary="b")["id"]
    assert client.post(f"/v1/services/{sid}/heartbeat").status_code == 204  # now cached
    with ServiceGroup.from_options(database__connection=db_url, **TIMINGS) as sg:
        sg.delete(sid)
    assert_error(client.post(f"/v1/services/{sid}/heartbeat"), 404)
    assert_error(client.post(f"/v1/services/{sid}/heartbeat"), 404)


def test_versions_min_max_and_up_only(client: httpx.Client) -> None:
    binary = unique("bin")
    register(client, host="old", binary=binary, version=1)
    new = register(client, host="new", binary=binary, version=5)

    response = client.get(f"/v1/versions/{binary}")
    assert response.status_code == 200
    assert response.json() == {"binary": binary, "min": 1, "max": 5}

    def only_new_counts() -> bool:
        beat_then_get(client, new["id"])
        body = client.get(f"/v1/versions/{binary}", params={"up_only": "true"}).json()
        return body == {"binary": binary, "min": 5, "max": 5}

    eventually(only_new_counts, "up_only sees only the beating service")
    nobody = client.get(f"/v1/versions/{unique('nobody')}")
    assert nobody.json()["min"] is None and nobody.json()["max"] is None
    assert_error(client.get(f"/v1/versions/{binary}", params={"up_only": "maybe"}), 422, "up_only")


def test_heartbeats_beats_many_services_in_one_request(client: httpx.Client) -> None:
    binary = unique("bin")
    a, b, gone = (register(client, host=h, binary=binary)["id"] for h in ("a", "b", "gone"))
    assert client.delete(f"/v1/services/{gone}").status_code == 204
    never = str(uuid.uuid4())
    response = client.post("/v1/heartbeats", json={"ids": [a, b, a.upper(), gone, never]})
    assert response.status_code == 200, response.text
    failed = response.json()["failed"]
    assert set(failed) == {gone, never}
    assert failed[never]["code"] == 404
    assert failed[never]["not_found"] == {"kind": "service", "key": never}
    up = client.get("/v1/services", params={"binary": binary, "state": "up"}).json()["services"]
    assert {s["id"] for s in up} == {a, b}
    assert client.post("/v1/heartbeats", json={"ids": []}).json() == {"failed": {}}


def test_heartbeats_refuses_a_bad_batch_whole(client: httpx.Client) -> None:
    sid = register(client, host=unique("h"), binary="b")["id"]
    assert_error(client.post("/v1/heartbeats", json={"ids": [sid, "nope"]}), 400, "ids")
    too_many = [str(uuid.uuid4()) for _ in range(1700)]  # over the 64 KiB body limit
    assert_error(client.post("/v1/heartbeats", json={"ids": too_many}), 413)
    assert_error(client.post("/v1/heartbeats", json={"ids": sid}), 422, "ids")
    assert_error(client.post("/v1/heartbeats", json={}), 422, "ids")
    assert client.get(f"/v1/services/{sid}").json()["state"] == "down"  # nothing was written


def test_a_404_names_the_missing_record_but_not_a_missing_path(client: httpx.Client) -> None:
    """For servicegroup.client to raise the NotFound the Python API raises."""
    sid = str(uuid.uuid4())
    for response in (
        client.get(f"/v1/services/{sid}"),
        client.post(f"/v1/services/{sid}/heartbeat"),
    ):
        assert response.json()["error"]["not_found"] == {"kind": "service", "key": sid}
    claim = client.get("/v1/claims/instance/a/b").json()["error"]
    assert claim["not_found"] == {"kind": "claim", "key": "instance/a/b"}
    assert "not_found" not in client.get("/no/such/path").json()["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/services/not-a-uuid"),
        ("POST", "/v1/services/not-a-uuid/heartbeat"),
        ("DELETE", "/v1/services/12345"),
        ("GET", "/v1/services/670c452f-cd58-4933-b123-3c937d34fde1"),
        ("GET", "/no/such/path"),
    ],
)
def test_unknown_ids_and_paths_are_404(client: httpx.Client, method: str, path: str) -> None:
    assert_error(client.request(method, path), 404)


def test_bad_bodies_are_4xx_with_the_error_shape(client: httpx.Client) -> None:
    post = "/v1/services"
    json_headers = {"content-type": "application/json"}
    assert_error(client.post(post, content=b'{"host": ', headers=json_headers), 400)
    assert_error(client.post(post, json={"host": "h", "binary": "b", "bogus": 1}), 422, "bogus")
    assert_error(client.post(post, json={"binary": "b"}), 422, "host")
    assert_error(client.post(post, json={"host": 5, "binary": "b"}), 422, "host")
    assert_error(
        client.post(post, json={"host": "h", "binary": "b", "version": True}), 422, "version"
    )
    assert_error(client.post(post, json=["h", "b"]), 422)
    big = client.post(post, json={"host": "h" * (70 * 1024), "binary": "b"})
    assert_error(big, 413)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"host": "bad\x01host", "binary": "b"}, "host"),
        ({"host": "bad\nhost", "binary": "b"}, "host"),
        ({"host": " padded", "binary": "b"}, "host"),
        ({"host": "h", "binary": ""}, "binary"),
        ({"host": "h", "binary": "b", "topic": "t" * 256}, "topic"),
        ({"host": "h", "binary": "b", "version": -1}, "version"),
        ({"host": "h", "binary": "b", "version": 2**31}, "version"),
    ],
)
def test_field_rules_are_400_naming_the_field(
    client: httpx.Client, body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/services", json=body)
    assert_error(response, 400, field)
    assert response.json()["error"]["message"].startswith(f"{field}: ")


def test_openapi_describes_every_endpoint_and_error(client: httpx.Client) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    paths = doc["paths"]
    expected = {
        "/healthz": {"get"},
        "/metrics": {"get"},
        "/v1/services": {"get", "post"},
        "/v1/services/{id}": {"get", "patch", "delete"},
        "/v1/services/{id}/heartbeat": {"post"},
        "/v1/services/{id}/leave": {"post"},
        "/v1/versions/{binary}": {"get"},
        "/v1/binaries/{binary}/times": {"get"},
    }
    for path, methods in expected.items():
        assert set(paths[path]) == methods, path
    error_ref = "#/components/schemas/ErrorBody"
    register_responses = paths["/v1/services"]["post"]["responses"]
    for code in ("400", "401", "403", "409", "413", "422", "503"):
        assert (
            register_responses[code]["content"]["application/json"]["schema"]["$ref"] == error_ref
        )
    assert "404" in paths["/v1/services/{id}"]["get"]["responses"]
    assert "503" in paths["/healthz"]["get"]["responses"]
    assert {"201", "200"} <= set(register_responses)
    assert doc["components"]["schemas"]["RegisterBody"]["additionalProperties"] is False


def scrape(client: httpx.Client, **params: str) -> dict[str, list[Any]]:
    response = client.get("/metrics", params=params)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(response.text)}


def test_metrics_parse_and_match_the_services(client: httpx.Client) -> None:
    binary = unique("bin")
    beating = register(client, host="beating", binary=binary, topic="t", version=4)
    register(client, host="quiet", binary=binary)  # topic and az null

    def scraped_with_beating_up() -> dict[str, list[Any]] | None:
        beat_then_get(client, beating["id"])
        families = scrape(client)
        ups = {
            s.labels["host"]: s.value
            for s in families["servicegroup_service_up"]
            if s.labels["binary"] == binary
        }
        return families if ups == {"beating": 1.0, "quiet": 0.0} else None

    families = eventually(scraped_with_beating_up, "a scrape that sees the beating service up")

    def mine(name: str) -> list[Any]:
        return [s for s in families[name] if s.labels.get("binary") == binary]

    assert [s.value for s in families["servicegroup_backend_up"]] == [1.0]
    assert families["servicegroup_backend_up"][0].labels == {"driver": "db"}
    info = {s.labels["host"]: s.labels for s in mine("servicegroup_service_info")}
    assert info["quiet"]["topic"] == "" and info["quiet"]["availability_zone"] == ""
    assert info["beating"]["topic"] == "t"
    assert info["beating"]["id"] == beating["id"]
    versions = {s.labels["host"]: s.value for s in mine("servicegroup_service_version")}
    assert versions == {"beating": 4.0, "quiet": 0.0}
    beats = {
        s.labels["host"] for s in mine("servicegroup_service_last_heartbeat_timestamp_seconds")
    }
    assert beats == {"beating"}
    counts = {s.labels["state"]: s.value for s in mine("servicegroup_services")}
    assert counts == {"up": 1.0, "down": 1.0, "unknown": 0.0}
    assert families["servicegroup_scrape_duration_seconds"][0].value >= 0


def test_a_scrape_chooses_its_per_service_series(client: httpx.Client) -> None:
    """?per_service= overrides [api] metrics_per_service for one scrape; the counts stay."""
    binary = unique("bin")
    beating = register(client, host="beating", binary=binary)
    register(client, host="quiet", binary=binary)
    eventually(lambda: beat_then_get(client, beating["id"])["state"] == "up", "beating up")

    def hosts(families: dict[str, list[Any]]) -> set[str]:
        ups = families.get("servicegroup_service_up", [])
        return {s.labels["host"] for s in ups if s.labels["binary"] == binary}

    def counted(families: dict[str, list[Any]]) -> float:
        return sum(
            s.value for s in families["servicegroup_services"] if s.labels["binary"] == binary
        )

    everything, not_up, none = (scrape(client, per_service=m) for m in ("all", "not_up", "none"))
    assert hosts(everything) >= {"quiet"}
    assert hosts(not_up) - {"beating"} == {"quiet"}
    assert "quiet" in hosts(scrape(client))  # the configured default: all
    assert hosts(none) == set()
    assert counted(everything) == counted(not_up) == counted(none) == 2
    assert_error(client.get("/metrics", params={"per_service": "some"}), 400, "per_service")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_exits_zero(tmp_path: Path, sig: signal.Signals) -> None:
    daemon = start_daemon(tmp_path, migrated_sqlite(tmp_path / "sg.sqlite")).wait_ready()
    try:
        daemon.signal(sig)
        assert daemon.wait_exit() == 0, daemon.log()
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log()
    assert "stopped" in daemon.log()


def test_refuses_to_start_on_unmigrated_database(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, f"sqlite:///{tmp_path / 'empty.sqlite'}")
    try:
        assert daemon.wait_exit() == 1
    finally:
        daemon.stop()
    lines = daemon.log().strip().splitlines()
    assert len(lines) == 1, lines
    assert "servicegroup db upgrade" in lines[0]
    assert "Traceback" not in daemon.log()


def test_refuses_to_start_with_unknown_driver(tmp_path: Path) -> None:
    db_url = migrated_sqlite(tmp_path / "sg.sqlite")
    daemon = start_daemon(tmp_path, db_url, driver="no-such-driver")
    try:
        assert daemon.wait_exit() == 1
    finally:
        daemon.stop()
    log = daemon.log()
    assert "Traceback" not in log
    assert "no-such-driver" in log.strip().splitlines()[-1]


def test_refuses_to_start_when_the_port_is_taken(tmp_path: Path) -> None:
    db_url = migrated_sqlite(tmp_path / "sg.sqlite")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "sg.conf", db_url, port, **TIMINGS)
        daemon = Daemon(config, port, tmp_path / "daemon.log").start()
        try:
            assert daemon.wait_exit() == 1
        finally:
            daemon.stop()
    assert "address already in use" in daemon.log()
    assert "Traceback" not in daemon.log()


def test_concurrent_registrations_and_beats_are_each_answered(daemon: Daemon) -> None:
    """Group commit: many requests at once share batches, each gets its own answer."""
    hosts = [unique("burst") for _ in range(60)]

    async def burst() -> tuple[list[httpx.Response], list[httpx.Response]]:
        async with httpx.AsyncClient(base_url=daemon.url, timeout=30.0) as http:
            # Every host twice in the same burst: one registration, one restart.
            bodies = [{"host": h, "binary": "burst", "version": 1} for h in hosts * 2]
            registered = await asyncio.gather(*(http.post("/v1/services", json=b) for b in bodies))
            ids = {r.json()["id"] for r in registered if r.status_code in (200, 201)}
            gone = str(uuid.uuid4())
            beat = [http.post(f"/v1/services/{sid}/heartbeat") for sid in [*ids, gone]]
            return registered, await asyncio.gather(*beat)

    registered, beaten = asyncio.run(burst())
    assert sorted(r.status_code for r in registered) == [200] * 60 + [201] * 60
    by_host: dict[str, set[str]] = {}
    for response in registered:
        body = response.json()
        by_host.setdefault(body["host"], set()).add(body["id"])
    assert set(by_host) == set(hosts) and all(len(ids) == 1 for ids in by_host.values())
    assert [r.status_code for r in beaten] == [204] * 60 + [404]
    with httpx.Client(base_url=daemon.url, timeout=10.0) as http:
        listed = http.get("/v1/services", params={"binary": "burst"}).json()["services"]
    # Beaten once each (the module daemon's down time is short: not "up" for long).
    assert {s["host"] for s in listed if s["last_heartbeat"] is not None} == set(hosts)


def test_workers_share_the_port_and_one_of_them_sweeps(tmp_path: Path) -> None:
    """[api] workers = 3: three daemons behind one port, one sweeper lease, one clean stop."""
    port = free_port()
    config = tmp_path / "servicegroup.conf"
    options = {**TIMINGS, "api__workers": 3}
    config.write_text(config_text(migrated_sqlite(tmp_path / "sg.sqlite"), port, options))
    daemon = Daemon(config, port, tmp_path / "daemon.log").start().wait_ready()
    try:
        leaders: list[float] = []
        registered: set[str] = set()
        deadline = time.monotonic() + DEADLINE
        while (len(set(leaders)) < 2 or len(registered) < 30) and time.monotonic() < deadline:
            # A new connection each time, so the kernel may pick another worker.
            with httpx.Client(base_url=daemon.url, timeout=10.0) as http:
                body = http.post("/v1/services", json={"host": unique("w"), "binary": "w"})
                registered.add(body.json()["id"])
                assert http.post(f"/v1/services/{body.json()['id']}/heartbeat").status_code == 204
                scraped = http.get("/metrics").text
            families = {f.name: f.samples for f in text_string_to_metric_families(scraped)}
            leaders.append(families["servicegroup_sweep_leader"][0].value)
        assert set(leaders) == {0.0, 1.0}, "every scrape came from one process"
        with httpx.Client(base_url=daemon.url, timeout=10.0) as http:
            listed = http.get("/v1/services", params={"binary": "w"}).json()["services"]
        assert {s["id"] for s in listed} >= registered
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit() == 0, daemon.log()
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log()
    assert daemon.log().count("servicegroup stopped") == 3
