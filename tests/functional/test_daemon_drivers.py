"""`servicegroup serve --config-file F` works with every driver, unchanged.

The daemon is a thin layer over ServiceGroup; switching the driver is one
line of configuration and no migration. This runs the real console script
against each real backend and drives it over HTTP.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import httpx
import pytest

from tests.functional.daemon import Daemon, config_text, free_port
from tests.functional.test_conformance import liveness_options, records_url
from tests.helpers import wait_for

DRIVER_BACKENDS = ["db-sqlite", "zookeeper", "memcached", "tooz-redis", "tooz-zookeeper"]


@pytest.fixture(params=DRIVER_BACKENDS)
def daemon(request: pytest.FixtureRequest, tmp_path: Path):
    url = records_url(request, tmp_path, "sqlite")
    port = free_port()
    config = tmp_path / "servicegroup.conf"
    options = {"report_interval": 0.05, "service_down_time": 0.5}
    options.update(liveness_options(request, request.param))
    config.write_text(config_text(url, port, options))
    script = shutil.which("servicegroup", path=str(Path(sys.executable).parent))
    assert script, "the servicegroup console script is not installed"
    argv = [script, "--config-file", str(config), "serve"]
    proc = Daemon(config, port, tmp_path / "daemon.log", argv=argv)
    proc.start().wait_ready()
    yield request.param.split("-")[0], proc
    proc.stop()


def test_serve_with_every_driver(daemon: tuple[str, Daemon]) -> None:
    driver, proc = daemon
    client = httpx.Client(base_url=proc.url, timeout=10)
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["driver"] == driver

    created = client.post("/v1/services", json={"host": "node 1/a", "binary": "compute"})
    assert created.status_code == 201, created.text
    service_id = created.json()["id"]
    assert created.json()["state"] == "down"

    assert client.post(f"/v1/services/{service_id}/heartbeat").status_code == 204
    assert client.get(f"/v1/services/{service_id}").json()["state"] == "up"
    listed = client.get("/v1/services", params={"binary": "compute", "state": "up"}).json()
    assert [s["id"] for s in listed["services"]] == [service_id]
    metrics = client.get("/metrics").text
    assert f'servicegroup_backend_up{{driver="{driver}"}} 1.0' in metrics
    assert 'servicegroup_service_up{binary="compute",host="node 1/a"} 1.0' in metrics

    wait_for(
        lambda: client.get(f"/v1/services/{service_id}").json()["state"] == "down",
        "the silent service to go down through the daemon",
    )
    deleted = client.delete(f"/v1/services/{service_id}")
    assert deleted.status_code == 204, (deleted.text, proc.log())
    assert client.get(f"/v1/services/{service_id}").status_code == 404
