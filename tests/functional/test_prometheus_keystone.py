"""A real Prometheus scrapes a daemon under `[api] auth_strategy = keystone`, with a real Keystone.

Prometheus 2.42 (Debian's) cannot send X-Auth-Token, only Authorization,
and reads the credentials from `authorization: credentials_file:` again on
every scrape. The daemon takes a Keystone token as `Authorization: Bearer`
too (keystone_auth.py), so the file holds a Keystone token, and whatever
keeps the file fresh (doc/operations.md) replaces it before it expires.

The daemon asks Keystone on every request (token_cache_ttl = 0), so a
revoked token is refused at once: a scrape that still sent the old token
after the file changed would go down, which is what the rotation test
watches for.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import unavailable
from tests.functional.daemon import Daemon, config_text, free_port
from tests.functional.test_daemon import migrated_sqlite
from tests.functional.test_prometheus_server import PromAPI
from tests.helpers import wait_for
from tests.keystone_server import Keystone, daemon_options, keystone_or_fail
from tests.servers import PrometheusServer, ServerUnavailable

PASSWORD = "scrape-user-secret-8d2"
SCRAPE = "500ms"
PATIENCE = 60.0  # a hang guard for every wait, never a performance bound
SCRAPES_AFTER_ROTATION = 3
# Prometheus' timestamps have nanoseconds; datetime takes microseconds.
NANOSECONDS = re.compile(r"(\.\d{6})\d*")


@dataclass
class ScrapeStage:
    keystone: Keystone
    fleet: str
    daemon: Daemon
    prom: PromAPI
    credentials: Path  # Prometheus' authorization.credentials_file

    def token(self) -> str:
        return self.keystone.token("scraper", PASSWORD, project_id=self.fleet)

    def write_token(self, token: str) -> None:
        """As a renewer should: a whole new file renamed over the old, never half a token."""
        fresh = self.credentials.with_suffix(".new")
        fresh.write_text(token + "\n")
        os.replace(fresh, self.credentials)

    def target(self) -> dict[str, Any]:
        """The scrape target of the servicegroup job, as Prometheus reports it.

        Health "unknown" until Prometheus has discovered it: a Prometheus that
        just started lists no active target for a moment.
        """
        answer = httpx.get(f"{self.prom.url}/api/v1/targets", params={"state": "active"})
        found = [
            t
            for t in answer.json()["data"]["activeTargets"]
            if t["labels"]["job"] == "servicegroup"
        ]
        assert len(found) <= 1, found
        return dict(found[0]) if found else {"health": "unknown"}


def _scraped_at(target: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(NANOSECONDS.sub(r"\1", target["lastScrape"]))


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapeStage]:
    if shutil.which("prometheus") is None:
        unavailable("Prometheus", "no `prometheus` binary (scripts/install-test-backends.sh)")
    tmp = tmp_path_factory.mktemp("prometheus-keystone")
    with contextlib.ExitStack() as stack:
        keystone = stack.enter_context(keystone_or_fail(tmp))
        fleet = keystone.project("fleet")
        keystone.service_user(PASSWORD)
        keystone.user("scraper", PASSWORD, fleet, "reader")

        port = free_port()
        config = tmp / "sg.conf"
        options = daemon_options(keystone, fleet, PASSWORD, cache_ttl=0.0)
        config.write_text(config_text(migrated_sqlite(tmp / "sg.sqlite"), port, options))
        daemon = Daemon(config, port, tmp / "daemon.log").start()
        stack.callback(daemon.stop)

        prometheus = PrometheusServer()
        stack.callback(prometheus.cleanup)
        credentials = prometheus.workdir / "servicegroup.token"
        scrape_config = {
            "global": {"scrape_interval": SCRAPE, "scrape_timeout": SCRAPE},
            "scrape_configs": [
                {
                    "job_name": "servicegroup",
                    "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                    "authorization": {"credentials_file": str(credentials)},
                }
            ],
        }
        (prometheus.workdir / prometheus.config_name).write_text(yaml.safe_dump(scrape_config))
        stage_ = ScrapeStage(keystone, fleet, daemon, PromAPI(prometheus.url), credentials)
        stage_.write_token(stage_.token())
        try:
            prometheus.start()
        except ServerUnavailable as exc:
            raise AssertionError(f"Prometheus did not start: {exc}") from exc
        daemon.wait_ready()
        yield stage_
        assert "Traceback" not in daemon.log(), daemon.log()


def test_prometheus_scrapes_with_a_keystone_token_from_its_credentials_file(
    stage: ScrapeStage,
) -> None:
    # /metrics is guarded: up means the token in the file was accepted.
    assert httpx.get(f"{stage.daemon.url}/metrics").status_code == 401
    target = wait_for(
        lambda: (t := stage.target())["health"] == "up" and t,
        "Prometheus to scrape the daemon",
        PATIENCE,
        every=0.1,
    )
    assert target["lastError"] == ""
    assert stage.prom.value('up{job="servicegroup"}') == 1
    assert stage.prom.value('servicegroup_backend_up{job="servicegroup"}') == 1


def test_a_new_token_in_the_file_keeps_the_scrape_up_after_the_old_is_revoked(
    stage: ScrapeStage,
) -> None:
    wait_for(lambda: stage.target()["health"] == "up", "a first good scrape", PATIENCE)
    old = stage.credentials.read_text().strip()
    new = stage.token()
    stage.write_token(new)
    stage.keystone.revoke(old)
    rotated = datetime.now().astimezone()
    # The old token is refused from now on (token_cache_ttl = 0): a scrape still
    # sending it would be down.
    refused = httpx.get(f"{stage.daemon.url}/metrics", headers={"Authorization": f"Bearer {old}"})
    assert refused.status_code == 401
    # Every scrape that started after the revocation read the file after the new token.
    scrapes: dict[str, tuple[str, str]] = {}

    def scraped_after_rotation() -> bool:
        target = stage.target()
        if _scraped_at(target) > rotated:
            scrapes[target["lastScrape"]] = (target["health"], target["lastError"])
        return len(scrapes) >= SCRAPES_AFTER_ROTATION

    wait_for(scraped_after_rotation, "scrapes after the rotation", PATIENCE, every=0.05)
    assert set(scrapes.values()) == {("up", "")}, scrapes
    assert stage.prom.value('servicegroup_backend_up{job="servicegroup"}') == 1
    print(f"{len(scrapes)} scrapes after the rotation, all up: {sorted(scrapes)}")
