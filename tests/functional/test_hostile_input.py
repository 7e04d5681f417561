"""Hostile and malformed input against the real daemon: 4xx, never 5xx, nothing written.

One daemon (subprocess, SQLite) for the module; every test names its
services uniquely. Raw sockets where httpx would refuse to send the request.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicegroup.client import Client
from tests.functional.daemon import Daemon
from tests.functional.test_daemon import assert_error, migrated_sqlite, start_daemon, unique

SLOW_CLIENTS = 100
GENEROUS = 10.0  # a correctness bound for "still answers", not a performance claim


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hostile-db") / "sg.sqlite"
    migrated_sqlite(path)
    return path


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, db_path: Path) -> Iterator[Daemon]:
    proc = start_daemon(tmp_path_factory.mktemp("hostile"), f"sqlite:///{db_path}")
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()
    log = proc.log()
    assert "Traceback" not in log, log
    assert "unexpected error" not in log, log


@pytest.fixture
def http(daemon: Daemon) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=daemon.url, timeout=30.0) as client:
        yield client


def raw(daemon: Daemon, request: bytes, timeout: float = GENEROUS) -> bytes:
    """Send bytes as they are; return what the daemon answered before closing."""
    port = int(daemon.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split()[1])


def counts(db_path: Path) -> tuple[int, int]:
    with sqlite3.connect(db_path) as conn:
        services = conn.execute("SELECT count(*) FROM services").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM service_events").fetchone()[0]
    return services, events


# -- bodies ------------------------------------------------------------------------


def test_body_over_64_kib_is_413_with_or_without_content_length(
    http: httpx.Client, daemon: Daemon
) -> None:
    big = {"host": "h" * (65 * 1024), "binary": "b"}
    assert_error(http.post("/v1/services", json=big), 413)

    def chunked() -> Iterator[bytes]:
        for _ in range(80):
            yield b"x" * 1024

    # A generator body goes out chunked: no Content-Length to trust.
    assert_error(http.post("/v1/services", content=chunked()), 413)
    sid = http.post("/v1/services", json={"host": unique("h"), "binary": "b"}).json()["id"]
    assert_error(http.patch(f"/v1/services/{sid}", json={"disabled_reason": "r" * 70_000}), 413)


@pytest.mark.parametrize(
    "body",
    [b"{", b'{"host": "h", "binary": }', b"\xff\xfe", b'{"host": "h", "binary": "b"} trailing'],
)
def test_malformed_json_is_400(http: httpx.Client, body: bytes) -> None:
    response = http.post("/v1/services", content=body, headers={"content-type": "application/json"})
    assert_error(response, 400)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"binary": "b"}, "host"),
        ({"host": "h"}, "binary"),
        ({"host": ["h"], "binary": "b"}, "host"),
        ({"host": {"a": 1}, "binary": "b"}, "host"),
        ({"host": None, "binary": "b"}, "host"),
        ({"host": "h", "binary": "b", "version": "1"}, "version"),
        ({"host": "h", "binary": "b", "version": 1.5}, "version"),
        ({"host": "h", "binary": "b", "topic": 7}, "topic"),
        ({"host": "h", "binary": "b", "id": str(uuid.uuid4())}, "id"),
        ({"host": "h", "binary": "b", "deleted": 1}, "deleted"),
    ],
)
def test_wrong_types_missing_and_unknown_fields_name_the_field(
    http: httpx.Client, body: dict[str, Any], field: str
) -> None:
    response = http.post("/v1/services", json=body)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["field"] == field


def test_unknown_patch_field_is_rejected(http: httpx.Client) -> None:
    sid = http.post("/v1/services", json={"host": unique("h"), "binary": "b"}).json()["id"]
    assert_error(http.patch(f"/v1/services/{sid}", json={"host": "renamed"}), 422, "host")
    assert http.get(f"/v1/services/{sid}").json()["host"] != "renamed"


@pytest.mark.parametrize("field", ["host", "binary", "topic", "availability_zone"])
@pytest.mark.parametrize(
    "value",
    ["a\x00b", "a\x1bb", "a\rb", "a\u2028b", "a\u202eb", "\ud800", "x" * 256, "y" * 10_000],
    ids=["nul", "esc", "cr", "line-sep", "bidi", "surrogate", "256", "10k"],
)
def test_control_characters_and_long_names_are_400(
    http: httpx.Client, field: str, value: str
) -> None:
    body = {"host": unique("h"), "binary": "b", field: value}
    # json.dumps escapes to ASCII, so a lone surrogate goes out as \\ud800.
    content = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    assert_error(http.post("/v1/services", content=content, headers=headers), 400, field)


# -- verbatim storage ------------------------------------------------------------

NASTY = [
    "'; DROP TABLE services; --",
    '"; DELETE FROM services WHERE "1"="1',
    "100%",
    "%",
    "_",
    "a_c",
    "a%c",
    "back\\slash\\\\",
    "quote'n\"double",
    "nœud-東京-😀",
    "rack 7/compute.1",
    "{braces}[brackets]*?",
]


@pytest.mark.parametrize("name", NASTY)
def test_sql_metacharacters_are_stored_verbatim_and_match_exactly(
    http: httpx.Client, name: str
) -> None:
    binary = unique("sqlmeta")
    created = http.post("/v1/services", json={"host": name, "binary": binary, "topic": name})
    assert created.status_code == 201, created.text
    # Decoys a LIKE pattern or a case-folding comparison would also match.
    for decoy in ("abc", "a%c-decoy", "X" + name, name + "X", name.upper()):
        if decoy != name:
            http.post("/v1/services", json={"host": decoy, "binary": binary})
    got = http.get(f"/v1/services/{created.json()['id']}").json()
    assert (got["host"], got["topic"]) == (name, name)
    listed = http.get("/v1/services", params={"binary": binary, "host": name}).json()
    assert [s["host"] for s in listed["services"]] == [name]
    by_topic = http.get("/v1/services", params={"binary": binary, "topic": name}).json()
    assert [s["host"] for s in by_topic["services"]] == [name]
    events = http.get("/v1/events", params={"binary": binary, "host": name}).json()
    assert {e["host"] for e in events["events"]} == {name}
    assert http.get("/v1/services", params={"binary": binary}).json()["services"]  # not dropped


# -- ids and paths -------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw_id",
    [
        "not-a-uuid",
        "1",
        "' OR 1=1 --",
        "%00",
        "..%2F..%2Fetc",
        "x" * 5000,
        "155d880b-907b-465b-8d2a-d2eec53c1915",
    ],
)
def test_bad_or_unknown_ids_are_404(http: httpx.Client, raw_id: str) -> None:
    for method, suffix in [("GET", ""), ("POST", "/heartbeat"), ("POST", "/leave")]:
        assert_error(http.request(method, f"/v1/services/{raw_id}{suffix}"), 404)
    assert_error(http.delete(f"/v1/services/{raw_id}"), 404)
    assert_error(http.patch(f"/v1/services/{raw_id}", json={"disabled": True}), 404)


@pytest.mark.parametrize("binary", ["a/b", "/leading", "a//b", "..", ".", "a/../b", "%2F", "?#&"])
def test_versions_of_any_binary_via_client_and_raw_http(
    daemon: Daemon, http: httpx.Client, binary: str
) -> None:
    """The path converter used to stop at '/': such binaries were 404."""
    http.post("/v1/services", json={"host": unique("h"), "binary": binary, "version": 4})
    with Client(daemon.url) as client:
        assert client.get_version_range(binary) == (4, 4)
    quoted = "".join(c if c.isalnum() else f"%{ord(c):02X}" for c in binary)
    body = raw(
        daemon,
        f"GET /v1/versions/{quoted} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
    )
    assert status_of(body) == 200, body
    assert body.endswith(b'"min":4,"max":4}'), body


# -- huge and slow requests ------------------------------------------------------


@pytest.mark.parametrize("size", [100_000, 1_000_000])
def test_huge_query_string_is_4xx_and_the_daemon_lives(
    daemon: Daemon, http: httpx.Client, size: int
) -> None:
    target = b"/v1/services?host=" + b"a" * size
    answer = raw(daemon, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    if answer:  # uvicorn may also just close the connection on an oversized request line
        assert 400 <= status_of(answer) < 500, answer[:300]
    assert http.get("/healthz").status_code == 200


def test_huge_header_is_4xx_and_the_daemon_lives(daemon: Daemon, http: httpx.Client) -> None:
    header = b"X-Junk: " + b"j" * 1_000_000 + b"\r\n"
    answer = raw(
        daemon, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + header + b"Connection: close\r\n\r\n"
    )
    if answer:
        assert status_of(answer) < 500, answer[:300]
    assert http.get("/healthz").status_code == 200


def test_slow_and_idle_clients_do_not_starve_others(daemon: Daemon, http: httpx.Client) -> None:
    """100 clients dribbling headers and 100 idle sockets; a normal client still gets answers."""
    port = int(daemon.url.rsplit(":", 1)[1])
    sockets: list[socket.socket] = []
    try:
        for _ in range(SLOW_CLIENTS):
            slow = socket.create_connection(("127.0.0.1", port), timeout=GENEROUS)
            slow.sendall(b"GET /v1/services HTTP/1.1\r\nHost: x\r\n")
            sockets.append(slow)
            sockets.append(socket.create_connection(("127.0.0.1", port), timeout=GENEROUS))
        for round_ in range(3):
            for slow in sockets[::2]:
                slow.sendall(f"X-Slow-{round_}: 1\r\n".encode())
            started = time.monotonic()
            response = http.get("/healthz", timeout=GENEROUS)
            assert response.status_code == 200
            assert time.monotonic() - started < GENEROUS
            sid = http.post("/v1/services", json={"host": unique("h"), "binary": "b"}).json()["id"]
            assert http.post(f"/v1/services/{sid}/heartbeat").status_code == 204
    finally:
        for sock in sockets:
            sock.close()
    assert http.get("/healthz").status_code == 200


def test_many_concurrent_bad_requests_leave_the_daemon_serving(http: httpx.Client) -> None:
    def bad(i: int) -> int:
        with httpx.Client(base_url=str(http.base_url), timeout=30.0) as own:
            return own.post("/v1/services", json={"host": f"bad\x00{i}", "binary": "b"}).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(bad, range(200)))
    assert set(statuses) == {400}
    assert http.get("/healthz").status_code == 200


# -- nothing written --------------------------------------------------------------


def test_a_barrage_of_rejected_requests_writes_nothing(
    daemon: Daemon, http: httpx.Client, db_path: Path
) -> None:
    sid = http.post("/v1/services", json={"host": unique("h"), "binary": "b"}).json()["id"]
    before_service = http.get(f"/v1/services/{sid}").json()
    time.sleep(0.3)  # let the sweeper record the registration before counting
    before = counts(db_path)
    json_headers = {"content-type": "application/json"}
    rejected = [
        http.post("/v1/services", json={"host": "h\x00", "binary": "b"}),
        http.post("/v1/services", json={"host": "h", "binary": "b", "version": -1}),
        http.post("/v1/services", json={"host": "h", "binary": "b", "bogus": 1}),
        http.post("/v1/services", json={"host": "h" * 256, "binary": "b"}),
        http.post("/v1/services", json={"host": "h", "binary": "b" * 70_000}),
        http.post("/v1/services", content=b'{"host": "h",', headers=json_headers),
        http.patch(f"/v1/services/{sid}", json={"disabled": True, "version": -1}),
        http.patch(f"/v1/services/{sid}", json={"forced_down": "yes"}),
        http.patch(f"/v1/services/{sid}", json={"disabled_reason": "r" * 256, "disabled": True}),
        http.patch(f"/v1/services/{sid}", json={"disabled": True, "deleted": 1}),
        http.delete("/v1/services/not-a-uuid"),
        http.post(f"/v1/services/{uuid.uuid4()}/heartbeat"),
        http.post(f"/v1/services/{uuid.uuid4()}/leave"),
    ]
    assert all(400 <= r.status_code < 500 for r in rejected), [r.status_code for r in rejected]
    assert counts(db_path) == before
    after_service = http.get(f"/v1/services/{sid}").json()
    for key in ("disabled", "forced_down", "version", "disabled_reason", "updated_at"):
        assert after_service[key] == before_service[key], key


def test_event_query_bounds_are_400(http: httpx.Client) -> None:
    for params, field in [
        ({"since": -1}, "since"),
        ({"since": 2**63}, "since"),
        ({"since": 10**30}, "since"),
        ({"wait": 61}, "wait"),
        ({"wait": "nan"}, "wait"),
        ({"wait": "inf"}, "wait"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"host": "h\x00"}, "host"),
    ]:
        assert_error(http.get("/v1/events", params=params), 400, field)
