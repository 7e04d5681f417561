"""Claims over HTTP (real app, real socket), the CLI, metrics and the policy parser."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from servicegroup import ServiceGroup, cli
from servicegroup.leader.sweeper import Sweeper
from servicegroup.server.app import create_app
from tests.live import serve_in_thread

AGENT, ADMIN = "agent-tok-c1a1", "admin-tok-c1a2"


@pytest.fixture
def api(sqlite_url: str, make_group) -> Iterator[tuple[httpx.Client, ServiceGroup]]:
    group = make_group(sqlite_url, api__agent_tokens=[AGENT], api__admin_tokens=[ADMIN])
    with serve_in_thread(create_app(group)) as url, httpx.Client(base_url=url) as http:
        http.headers["Authorization"] = f"Bearer {AGENT}"
        yield http, group


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _conflict(response: httpx.Response, kind: str) -> dict[str, Any]:
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == 409 and error["kind"] == kind
    return error


def test_claim_lifecycle_over_http(api) -> None:
    http, _group = api
    svc = _ok(http.post("/v1/services", json={"host": "h/1", "binary": "compute"}), 201)
    me = str(uuid.uuid4())
    body = {
        "service_id": svc["id"],
        "incarnation": me,
        "resource_type": "instance",
        "resource_id": "tenant/i-1",
        "operation": "rebuilding",
        "details": {"step": 1},
    }
    made = _ok(http.post("/v1/claims", json=body), 201)
    assert (made["epoch"], made["state"], made["owner_host"]) == (1, "held", "h/1")
    held = _conflict(
        http.post("/v1/claims", json={**body, "incarnation": str(uuid.uuid4())}), "claim_held"
    )
    assert held["claim"]["owner"] == svc["id"] and "h/1" in held["message"]
    tok = {k: body[k] for k in ("service_id", "incarnation", "resource_type", "resource_id")}
    tok["epoch"] = made["epoch"]
    renewed = _ok(http.post("/v1/claims/renew", json={**tok, "details": {"step": 2}}))
    assert renewed["details"] == {"step": 2}
    shown = _ok(http.get("/v1/claims/instance/tenant/i-1"))  # '/' in the id: a path parameter
    assert shown["epoch"] == 1 and shown["details"] == {"step": 2}
    assert _ok(http.get("/v1/claims", params={"owner": svc["id"]}))["claims"] == [shown]
    other = _conflict(
        http.post("/v1/claims/renew", json={**tok, "incarnation": str(uuid.uuid4())}), "claim_lost"
    )
    assert "claim lost" in other["message"]
    assert _ok(http.post("/v1/claims/release", json=tok))["state"] == "released"
    _conflict(http.post("/v1/claims/release", json=tok), "claim_lost")
    lost = http.get(
        f"/v1/services/{svc['id']}/lost-claims", params={"incarnation": str(uuid.uuid4())}
    )
    assert _ok(lost)["claims"] == []  # released by its owner: not lost


def test_force_release_needs_admin_and_bad_input_is_4xx(api) -> None:
    http, group = api
    svc = group.register("h1", "compute")
    group.claim(svc, "instance", "i-1", "rebuilding")
    body = {"resource_type": "instance", "resource_id": "i-1", "reason": "stuck"}
    assert http.post("/v1/claims/force-release", json=body).status_code == 403
    admin = {"Authorization": f"Bearer {ADMIN}"}
    freed = _ok(http.post("/v1/claims/force-release", json=body, headers=admin))
    assert (freed["state"], freed["epoch"]) == ("released", 2)
    event = _ok(http.get("/v1/events"))["events"][-1]
    assert event["cause"] == "claim_force_released" and event["details"]["reason"] == "stuck"
    assert http.get("/v1/claims/instance/nothing").status_code == 404
    assert http.get("/v1/claims/bad%20type/x").status_code == 404
    bad = {
        "service_id": svc.uuid,
        "incarnation": str(uuid.uuid4()),
        "resource_type": "a:b",
        "resource_id": "x",
        "operation": "op",
    }
    assert _field(http.post("/v1/claims", json=bad), 400) == "resource_type"
    assert (
        _field(http.post("/v1/claims", json={**bad, "resource_type": "t", "details": [1]}), 422)
        == "details"
    )
    assert (
        _field(http.post("/v1/claims", json={**bad, "resource_type": "t", "incarnation": "x"}), 400)
        == "incarnation"
    )
    assert (
        http.post(
            "/v1/claims", json={**bad, "resource_type": "t", "service_id": str(uuid.uuid4())}
        ).status_code
        == 404
    )
    assert _field(http.get("/v1/claims", params={"state": "bogus"}), 400) == "state"
    assert (
        http.get("/v1/services/not-a-uuid/lost-claims", params={"incarnation": "x"}).status_code
        == 404
    )
    mine = {"incarnation": str(uuid.uuid4())}
    gone = group.register("h2", "compute")
    assert http.get(f"/v1/services/{gone.uuid}/lost-claims", params=mine).status_code == 200
    group.delete(gone)
    for sid in (gone.uuid, str(uuid.uuid4())):  # a sub-resource goes with its service
        assert http.get(f"/v1/services/{sid}/lost-claims", params=mine).status_code == 404
    schema = _ok(http.get("/openapi.json"))
    for path in ("/v1/claims", "/v1/claims/renew", "/v1/claims/release"):
        assert "409" in schema["paths"][path]["post"]["responses"]


def _field(response: httpx.Response, status: int) -> str | None:
    assert response.status_code == status, response.text
    return response.json()["error"]["field"]


def test_metrics_show_claims_and_recoveries(sqlite_url: str, make_group) -> None:
    group = make_group(sqlite_url, events__sweep_interval=0.05)
    sweeper = Sweeper(group, group.conf)
    svc = group.register("h1", "compute")
    group.claim(svc, "instance", "i-1", "rebuilding")
    group.claim(svc, "stack", "s-1", "updating")
    group.set_forced_down(svc, True)  # no grace: revoked and released in one sweep
    sweeper.sweep()
    group.claim(svc, "instance", "i-2", "rebuilding")
    with serve_in_thread(create_app(group, sweeper)) as url:
        text = httpx.get(f"{url}/metrics").text
    sweeper.stop()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("servicegroup_claims", (("resource_type", "instance"), ("state", "held")))] == 1
    assert ("servicegroup_claims", (("resource_type", "stack"), ("state", "held"))) not in samples
    assert samples[("servicegroup_claim_recoveries_total", (("outcome", "revoked"),))] == 2
    assert samples[("servicegroup_claim_recoveries_total", (("outcome", "released"),))] == 2
    assert samples[("servicegroup_claim_oldest_age_seconds", ())] >= 0


def _cli(config: Path, *argv: str, capsys) -> tuple[int, str, str]:
    code = cli.main([*argv, "--config-file", str(config)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_claim_commands(sqlite_url: str, make_group, tmp_path: Path, capsys) -> None:
    config = tmp_path / "sg.conf"
    config.write_text(f"[database]\nconnection = {sqlite_url}\n")
    group = make_group(sqlite_url)
    svc = group.register("h1", "compute")
    group.claim(svc, "instance", "i-1", "rebuilding", {"k": "v"})
    code, out, _ = _cli(config, "claim", "list", capsys=capsys)
    assert code == 0 and "i-1" in out and "rebuilding" in out and out.startswith("type")
    code, out, _ = _cli(
        config, "claim", "show", "instance", "i-1", "--format", "json", capsys=capsys
    )
    assert code == 0 and json.loads(out)["details"] == {"k": "v"}
    code, _, err = _cli(
        config, "claim", "release", "instance", "i-1", "--epoch", "7", capsys=capsys
    )
    assert code == 1 and "claim lost" in err
    code, out, _ = _cli(
        config, "claim", "release", "instance", "i-1", "--epoch", "1", capsys=capsys
    )
    assert code == 0 and "released" in out
    group.claim(svc, "instance", "i-1", "rebuilding")
    code, out, _ = _cli(
        config, "claim", "force-release", "instance", "i-1", "--reason", "ops", capsys=capsys
    )
    assert code == 0 and "epoch now 3" in out
    code, out, _ = _cli(
        config, "claim", "list", "--state", "held", "--format", "json", capsys=capsys
    )
    assert json.loads(out) == {"claims": []}
    code, _, err = _cli(config, "claim", "show", "instance", "nope", capsys=capsys)
    assert code == 1 and "not found" in err
    code, _, err = _cli(config, "claim", "show", "bad type", "x", capsys=capsys)
    assert code == 2
