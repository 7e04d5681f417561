"""Scenario 5: the records database (the test's own PostgreSQL) restarts under the daemon.

During the restart every request gets a 503 with the JSON error body (never a
500, never a hang); once PostgreSQL accepts connections again the very next
request succeeds (pool_pre_ping replaced the pooled connections the restart
killed); and the event stream resumes with contiguous ids and exactly one
event per transition.
"""

from __future__ import annotations

import time
from collections import defaultdict

import httpx
import pytest

from servicegroup import State
from tests.functional import faultkit as fk

FLEET = 10
INTERVAL = 0.1
DOWN_TIME = 1.0
OUTAGE = 2.0  # longer than the down time: ages pass it while nobody can write


def request_all(client: httpx.Client, uuid: str) -> list[httpx.Response]:
    return [
        client.get("/v1/services"),
        client.get(f"/v1/services/{uuid}"),
        client.post(f"/v1/services/{uuid}/heartbeat"),
        client.get("/v1/events", params={"since": 0, "limit": 5}),
        client.get("/healthz"),
    ]


@pytest.mark.timeout(120)
def test_database_restart_under_the_daemon(postgresql_server_private, tmp_path, make_group):
    pg = postgresql_server_private
    options = {
        "driver": "db",
        "report_interval": INTERVAL,
        "service_down_time": DOWN_TIME,
        "database__connect_timeout": 0.5,
        "database__query_timeout": 1.0,
        "events__sweep_interval": 0.05,
    }
    sg = make_group(pg.url, **options)
    services = [sg.register(f"host-{i}", "db-fleet") for i in range(FLEET)]
    reporters = [sg.join(svc) for svc in services]
    fk.wait_for(lambda: fk.all_up(sg, FLEET), "the fleet up")
    with (
        fk.daemon(tmp_path, pg.url, options) as proc,
        httpx.Client(base_url=proc.url, timeout=10) as client,
    ):
        fk.wait_for(
            lambda: all(s.service.observed_state == "up" for s in sg.get_all()),
            "the sweeper to observe the fleet",
        )
        cursor = sg.events(since=0).cursor  # registered (down), then down -> up, per service
        for _ in range(3):  # fill the daemon's pool with connections the kill will break
            assert all(r.status_code < 300 for r in request_all(client, services[0].uuid))
        # One service really stops during the restart; it must get exactly one down event.
        reporters[0].stop()
        pg.kill()
        killed = time.monotonic()
        during: list[httpx.Response] = []
        while time.monotonic() - killed < OUTAGE:
            during += request_all(client, services[1].uuid)
            time.sleep(0.05)
        pg.start()
        back = time.monotonic()
        first = request_all(client, services[1].uuid)
        after_first = time.monotonic() - back
        fk.wait_for(
            lambda: (
                sg.get(services[0]).state is State.DOWN
                and all(s.state is State.UP for s in sg.get_all()[1:])
            ),
            "the stopped service down, the others up",
        )
        fk.wait_for(
            lambda: sg.events(since=cursor).events,
            "the stopped service's down event",
        )
        time.sleep(3 * 0.05)  # a few more sweeps: nothing else may follow
        later = [r for _ in range(5) for r in request_all(client, services[1].uuid)]
        daemon_log = proc.log()
    every_event = sg.events(since=0).events
    events = [e for e in every_event if e.id > cursor]

    codes = defaultdict(int)
    for response in during:
        codes[response.status_code] += 1
    fk.figure("db_restart.responses_during_restart", str(dict(codes)), "")
    fk.figure("db_restart.first_requests_after_restart", str([r.status_code for r in first]), "")
    fk.figure("db_restart.first_round_after_restart", after_first)
    fk.figure("db_restart.events", str([(e.id, e.host, e.previous, e.state) for e in events]), "")

    bad = [r for r in during if r.status_code not in (200, 204, 503)]
    assert not bad, [(r.request.url.path, r.status_code, r.text) for r in bad]
    unavailable = [r for r in during if r.status_code == 503]
    assert unavailable, "no request saw the database gone"
    for response in unavailable:
        error = response.json()["error"]
        assert error["code"] == 503 and error["message"], response.text
    assert [r.status_code for r in first] == [200, 200, 204, 200, 200], [
        (r.request.url.path, r.status_code, r.text) for r in first
    ]
    assert all(r.status_code < 300 for r in later)
    ids = [e.id for e in every_event]
    assert ids == list(range(ids[0], ids[0] + len(ids))), f"gap in event ids: {ids}"
    per_service = defaultdict(list)
    for event in events:
        per_service[event.service_id].append((event.previous, event.state))
    assert per_service == {services[0].uuid: [("up", "down")]}, dict(per_service)
    assert "Traceback" not in daemon_log
