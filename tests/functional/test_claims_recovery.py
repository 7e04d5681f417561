"""Recovery end to end, with real processes, on every driver.

A worker process claims tasks in a demo table and moves them under fencing.
Then either it is SIGKILLed, or it hangs with its reporter thread still
beating. The sweeping leader (a Sweeper in this process) must revoke its
claims, run the recovery hook (a real command) under a new epoch, and the
tasks must be back to "active"; a late write under the old epoch must
match 0 rows.

The SIGKILL-to-recovered figure is printed (pytest -s) and checked against
the stated bound, service_down_time + grace + one sweep, with a generous
margin for a loaded CI machine.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from servicegroup import ServiceGroup
from servicegroup.claims import fence, token
from servicegroup.exceptions import ClaimLost
from servicegroup.leader.sweeper import Sweeper
from tests.functional.claims_demo.worker import TASKS
from tests.functional.test_conformance import Backend, backend  # noqa: F401
from tests.helpers import wait_for

DEMO = Path(__file__).parent / "claims_demo"
SWEEP = 0.05
GRACE = 0.3
MAX_DURATION = 1.0
PATIENCE = 30.0
HANG_BACKENDS = ["db-sqlite", "zookeeper", "memcached", "tooz-redis", "tooz-zookeeper"]


class Scene:
    def __init__(self, where: Backend, tmp_path: Path, max_duration: float) -> None:
        hook = f"{shlex.quote(sys.executable)} {DEMO / 'hook.py'} {shlex.quote(where.url)}"
        self.sg: ServiceGroup = where.group(
            events__sweep_interval=SWEEP,
            claims__policies=[
                f"task:rebuilding = handoff, hook=reset, grace={GRACE}, max_duration={max_duration}"
            ],
            claims__recovery_hooks=[f"reset = {hook}"],
            claims__hook_timeout=10.0,
            claims__retry_backoff=0.1,
        )
        self.backend = where
        self.tmp_path = tmp_path
        self.tasks = [f"t-{i}" for i in range(3)]
        TASKS.create(self.sg.engine, checkfirst=True)
        with self.sg.engine.begin() as conn:
            conn.execute(TASKS.delete())
            conn.execute(
                TASKS.insert(), [{"id": t, "state": "active", "epoch": 0} for t in self.tasks]
            )
        self.sweeper = Sweeper(self.sg, self.sg.conf).start()
        self.worker: subprocess.Popen[bytes] | None = None

    def start_worker(self, mode: str) -> dict:
        config = self.tmp_path / "worker.json"
        options = {
            "database__connection": self.backend.url,
            "report_interval": self.sg.report_interval,
            "service_down_time": self.sg.down_time,
            **self.backend.options,
        }
        host = f"worker-{uuid.uuid4().hex[:6]}"
        config.write_text(json.dumps({"options": options, "host": host, "tasks": self.tasks}))
        self.worker = subprocess.Popen(
            [sys.executable, str(DEMO / "worker.py"), str(config), mode],
            stdout=subprocess.PIPE,
            stderr=open(self.tmp_path / "worker.log", "wb"),  # noqa: SIM115
        )
        assert self.worker.stdout is not None
        line = self.worker.stdout.readline()
        assert line, (self.tmp_path / "worker.log").read_text()
        ready = json.loads(line)
        assert self.states() == {t: "rebuilding" for t in self.tasks}
        service = ready["service"]
        wait_for(lambda: self.sg.get(service).service.observed_state == "up", "worker seen up")
        return ready

    def states(self) -> dict[str, str]:
        with self.sg.engine.connect() as conn:
            return dict(conn.execute(sa.select(TASKS.c.id, TASKS.c.state)).all())

    def handed_off(self) -> bool:
        """Every claim revoked and its hook started (the attempt bumped the epoch)."""
        return all(self.sg.get_claim("task", t).attempts >= 1 for t in self.tasks)

    def recovered(self) -> bool:
        claims = [self.sg.get_claim("task", t) for t in self.tasks]
        done = all(c.state == "released" for c in claims)
        return done and set(self.states().values()) == {"active"}

    def close(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.kill()
            self.worker.wait()
        self.sweeper.stop()
        TASKS.drop(self.sg.engine, checkfirst=True)

    def zombie_write(self, ready: dict) -> int:
        """The former owner writes late, under the epoch it had."""
        written = 0
        for c in ready["claims"]:
            old = token(
                c["resource_type"], c["resource_id"], c["owner"], c["incarnation"], c["epoch"]
            )
            with self.sg.engine.begin() as conn:
                stmt = (
                    TASKS.update()
                    .where((TASKS.c.id == old.resource_id) & fence(old))
                    .values(state="zombie")
                )
                written += conn.execute(stmt).rowcount
            with pytest.raises(ClaimLost):
                self.sg.renew(old, incarnation=old.incarnation)
        return written

    def claim_events(self) -> list[tuple[str, str | None, str | None]]:
        return [
            (e.cause, (e.details or {}).get("reason"), (e.details or {}).get("outcome"))
            for e in self.sg.events().events
            if e.cause.startswith("claim_")
        ]


@pytest.fixture
def make_scene(backend: Backend, tmp_path: Path) -> Iterator:  # noqa: F811
    scenes: list[Scene] = []

    def make(max_duration: float) -> Scene:
        scenes.append(Scene(backend, tmp_path, max_duration))
        return scenes[-1]

    yield make
    for s in scenes:
        s.close()


@pytest.mark.parametrize("backend", ["db-sqlite"], indirect=True)
def test_working_owner_keeps_its_claims_past_max_duration(make_scene) -> None:
    scene = make_scene(max_duration=MAX_DURATION)
    scene.start_worker("work")
    time.sleep(MAX_DURATION * 2)  # renewing every 0.1 s: never overdue
    assert all(scene.sg.get_claim("task", t).state == "held" for t in scene.tasks)


def test_sigkilled_worker_claims_are_handed_off(make_scene) -> None:
    # max_duration far beyond the test, so only the owner's death can recover.
    scene = make_scene(max_duration=PATIENCE * 10)
    ready = scene.start_worker("work")
    time.sleep(0.3)
    assert all(scene.sg.get_claim("task", t).state == "held" for t in scene.tasks)
    assert scene.worker is not None
    scene.worker.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    scene.worker.wait()
    wait_for(scene.handed_off, "the claims handed to the recovery hook")
    elapsed = time.monotonic() - killed
    wait_for(scene.recovered, "the claims recovered and the tasks active again")
    hook_done = time.monotonic() - killed
    bound = scene.sg.down_time + GRACE + SWEEP
    print(
        f"\n[{scene.backend.name}] SIGKILL -> handed off: {elapsed:.3f}s "
        f"(bound service_down_time + grace + sweep = {bound:.3f}s); "
        f"-> hook done, tasks active: {hook_done:.3f}s"
    )
    for t, c in zip(scene.tasks, ready["claims"], strict=True):
        claim = scene.sg.get_claim("task", t)
        assert claim.epoch == c["epoch"] + 2  # revoked, then taken by the hook's attempt
        assert claim.reason == "owner_down"
    assert scene.zombie_write(ready) == 0
    assert set(scene.states().values()) == {"active"}
    causes = scene.claim_events()
    assert causes.count(("claim_revoked", "owner_down", None)) == 3
    assert causes.count(("claim_recovered", None, "succeeded")) == 3
    assert scene.sweeper.recovery.outcomes["succeeded"] == 3


@pytest.mark.parametrize("backend", HANG_BACKENDS, indirect=True)
def test_hung_worker_claims_are_recovered_while_it_is_up(make_scene) -> None:
    scene = make_scene(max_duration=MAX_DURATION)
    ready = scene.start_worker("hang")
    service = ready["service"]
    wait_for(scene.recovered, "the hung worker's claims recovered")
    assert scene.sg.is_up(service), "the worker's reporter thread still beats"
    for t in scene.tasks:
        assert scene.sg.get_claim("task", t).reason == "max_duration"
    assert scene.zombie_write(ready) == 0
    assert set(scene.states().values()) == {"active"}
    assert scene.claim_events().count(("claim_revoked", "max_duration", None)) == 3
