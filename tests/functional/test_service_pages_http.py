"""GET /v1/summary and GET /v1/services?sort=&order=&offset=&limit=&summary= on a real daemon.

What the status page relies on to stay fast at 10,000 services: the daemon
counts and pages, the browser only ever receives one page.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicegroup.api import ServiceGroup
from tests.functional.daemon import Daemon, config_text, free_port
from tests.functional.test_daemon import migrated_sqlite

READ, ADMIN = "pages-read-token", "pages-admin-token"
HOSTS = [f"compute-{i:02d}" for i in range(25)]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp: Path = tmp_path_factory.mktemp("service-pages")
    url = migrated_sqlite(tmp / "sg.sqlite")
    with ServiceGroup.from_options(database__connection=url) as sg:
        for i, host in enumerate(HOSTS):
            service = sg.register(host, "nova-compute", availability_zone=f"az{i % 2}", version=i)
            if i % 5 == 0:
                sg.set_disabled(service, True, "maintenance")
        sg.register("api-1", "nova-api", version=7)
    port = free_port()
    options = {"api__read_tokens": [READ], "api__admin_tokens": [ADMIN]}
    (tmp / "sg.conf").write_text(config_text(url, port, options))
    running = Daemon(tmp / "sg.conf", port, tmp / "daemon.log").start().wait_ready()
    yield running
    running.stop()
    assert "Traceback" not in running.log()


def get(daemon: Daemon, path: str, token: str | None = READ) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{daemon.url}{path}", headers=headers)


def test_summary_counts_what_the_service_list_holds(daemon: Daemon) -> None:
    summary = get(daemon, "/v1/summary").json()
    services = get(daemon, "/v1/services").json()["services"]
    assert summary["totals"] == {
        "total": 26,
        "up": 0,
        "down": 26,
        "unknown": 0,
        "disabled": 5,
        "forced_down": 0,
    }
    groups = {(g["binary"], g["availability_zone"]): g for g in summary["groups"]}
    assert list(groups) == [("nova-api", None), ("nova-compute", "az0"), ("nova-compute", "az1")]
    az0 = [s for s in services if s["availability_zone"] == "az0"]
    assert groups["nova-compute", "az0"]["total"] == len(az0) == 13
    assert groups["nova-compute", "az0"]["min_version"] == min(s["version"] for s in az0) == 0
    assert groups["nova-compute", "az0"]["max_version"] == max(s["version"] for s in az0) == 24
    assert summary["event_cursor"] >= 26  # one registered event each
    assert summary["now"].endswith("Z")


def test_a_page_of_services_can_carry_the_summary(daemon: Daemon) -> None:
    """The status page's one request a refresh: the page and the fleet's counts together."""
    summary = get(daemon, "/v1/summary").json()
    for query in ("sort=state&limit=10", "binary=nova-api&sort=host"):
        alone = get(daemon, f"/v1/services?{query}").json()
        together = get(daemon, f"/v1/services?{query}&summary=true").json()
        assert "summary" not in alone
        assert together["services"] == alone["services"]
        assert together["total"] == alone["total"]
        # The counts are the whole fleet's whatever the filters: the fleet table's.
        carried = together.pop("summary")
        assert carried["totals"] == summary["totals"], query
        assert carried["groups"] == summary["groups"], query
        assert carried["event_cursor"] == summary["event_cursor"], query
        assert carried["now"].endswith("Z")
    answer = get(daemon, "/v1/services?summary=maybe")
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "summary"


def test_pages_follow_one_another_and_total_counts_every_match(daemon: Daemon) -> None:
    whole = get(daemon, "/v1/services?binary=nova-compute&sort=host&order=desc").json()
    assert whole["total"] == 25
    assert [s["host"] for s in whole["services"]] == sorted(HOSTS, reverse=True)
    pages: list[dict[str, Any]] = []
    for offset in range(0, 30, 10):
        query = f"binary=nova-compute&sort=host&order=desc&offset={offset}&limit=10"
        body = get(daemon, f"/v1/services?{query}").json()
        assert body["total"] == 25
        pages += body["services"]
    assert pages == whole["services"]


def test_the_page_parameters_are_checked_naming_the_field(daemon: Daemon) -> None:
    for query, code, field in [
        ("sort=uuid", 400, "sort"),
        ("order=up", 400, "order"),
        ("offset=-1", 400, "offset"),
        ("limit=0", 400, "limit"),
        ("limit=1001", 400, "limit"),
        ("limit=ten", 422, "limit"),
        ("offset=1.5", 422, "offset"),
    ]:
        answer = get(daemon, f"/v1/services?{query}")
        assert answer.status_code == code, query
        assert answer.json()["error"]["field"] == field, query


def test_the_summary_needs_the_read_token_when_reads_are_guarded(daemon: Daemon) -> None:
    assert get(daemon, "/v1/summary", token=None).status_code == 401
    assert get(daemon, "/v1/summary", token="wrong").status_code == 401
    assert get(daemon, "/v1/summary", token=ADMIN).status_code == 200
