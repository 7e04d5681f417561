"""One scenario suite, two front ends: ServiceGroup in-process, and servicegroup.client
against a real daemon (a subprocess) over the same records database.

Each test is written once against the ServiceGroup API and run through
both; the expectations are the same values, types and exceptions (with
their fields) for both. That is the promise of servicegroup.client: code
moves between in-process and HTTP by changing one constructor.

Names are unique per test (`tag`), so the two fronts and every test share
one database and one daemon without seeing each other's services.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicegroup import ServiceGroup, ServiceStatus, State
from servicegroup.binary_times import Times
from servicegroup.claims import Claim
from servicegroup.client import REPORT_INTERVAL, Client
from servicegroup.db.event_log import Event, EventBatch
from servicegroup.exceptions import BackendError, ClaimHeld, ClaimLost, InvalidInput, NotFound
from servicegroup.service import Service
from tests.conftest import empty_tables
from tests.functional.daemon import READY_TIMEOUT, Daemon, config_text, free_port
from tests.helpers import wait_for

ADMIN = "conformance-admin-token"
FRONTS = ["in-process", "http"]
# Long enough that no service of a test goes down by itself while it runs:
# every state change here is one the test makes.
DOWN_TIME = 60.0
# A binary with its own [binaries] times; every other keeps the defaults.
FAST = "conformance-fast"

Front = ServiceGroup | Client


def _daemon(tmp: Path, name: str, url: str, options: dict[str, Any]) -> Iterator[Daemon]:
    port = free_port()
    config = tmp / f"{name}.conf"
    config.write_text(config_text(url, port, {**options, "api__admin_tokens": [ADMIN]}))
    daemon = Daemon(config, port, tmp / f"{name}.log").start()
    try:
        _wait_listening(daemon)
        yield daemon
    finally:
        daemon.stop()


def _wait_listening(daemon: Daemon) -> None:
    """Until the daemon answers HTTP at all: /healthz is 503 when its backend is down."""
    assert daemon.proc is not None
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            raise AssertionError(f"daemon exited {daemon.proc.returncode}:\n{daemon.log()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{daemon.url}/openapi.json", timeout=1.0).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"daemon not listening after {READY_TIMEOUT}s:\n{daemon.log()}")


@pytest.fixture(scope="module")
def records(postgresql_db: str) -> str:
    empty_tables(postgresql_db)
    return postgresql_db


def _fronts(tmp: Path, name: str, url: str, options: dict[str, Any]) -> Iterator[dict[str, Front]]:
    """Both front ends over one configuration: a ServiceGroup, and a Client of a daemon."""
    options = {"service_down_time": DOWN_TIME, **options}
    with contextlib.ExitStack() as stack:
        daemon = stack.enter_context(contextlib.contextmanager(_daemon)(tmp, name, url, options))
        group = ServiceGroup.from_options(database__connection=url, **options)
        stack.callback(group.close)
        client = stack.enter_context(Client(daemon.url, ADMIN))
        yield {"in-process": group, "http": client}


@pytest.fixture(scope="module")
def fronts(records: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Front]]:
    options = {
        "driver": "db",
        "binaries__report_interval": f"{FAST}:0.5",
        "binaries__service_down_time": f"{FAST}:3",
    }
    yield from _fronts(tmp_path_factory.mktemp("healthy"), "healthy", records, options)


@pytest.fixture(scope="module")
def broken_fronts(
    records: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Front]]:
    """Both fronts on a liveness backend that is not there: memcached on a port nobody has."""
    options = {"driver": "memcached", "memcached__servers": [f"127.0.0.1:{free_port()}"]}
    yield from _fronts(tmp_path_factory.mktemp("broken"), "broken", records, options)


@pytest.fixture(params=FRONTS)
def sg(request: pytest.FixtureRequest, fronts: dict[str, Front]) -> Front:
    return fronts[request.param]


@pytest.fixture(params=FRONTS)
def broken(request: pytest.FixtureRequest, broken_fronts: dict[str, Front]) -> Front:
    return broken_fronts[request.param]


@pytest.fixture
def tag() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


def raises(exc_type: type[Exception], call: Callable[[], object]) -> Any:
    with pytest.raises(exc_type) as caught:
        call()
    return caught.value


# -- records ---------------------------------------------------------------------


def test_register_update_versions_and_delete(sg: Front, tag: str) -> None:
    created, new = sg.register_ex("h1", tag, topic="compute", availability_zone="az1", version=3)
    assert isinstance(created, Service) and new
    assert (created.host, created.binary, created.topic, created.version) == (
        "h1",
        tag,
        "compute",
        3,
    )
    again, new = sg.register_ex("h1", tag, version=4)
    assert (again.uuid, again.version, again.topic, new) == (created.uuid, 4, "compute", False)
    other = sg.register("h2", tag, availability_zone="az2", version=7)

    status = sg.get(created.uuid)
    assert isinstance(status, ServiceStatus)
    assert (status.service.uuid, status.state, status.last_heartbeat) == (
        created.uuid,
        State.DOWN,
        None,
    )
    assert sg.get(created).service.uuid == created.uuid  # a Service or its uuid
    listed = sg.get_all(binary=tag)
    assert sorted(s.service.host for s in listed) == ["h1", "h2"]
    assert [s.service.uuid for s in sg.get_all(binary=tag, availability_zone="az2")] == [other.uuid]
    assert sg.get_all(binary=tag, state=State.UP) == []
    assert sg.get_all(binary=tag, host="nobody") == []

    changed = sg.update(created, disabled=True, disabled_reason="kernel", version=5)
    assert isinstance(changed, Service)
    assert (changed.disabled, changed.disabled_reason, changed.version) == (True, "kernel", 5)
    assert sg.set_disabled(created.uuid, False).disabled is False
    assert sg.set_forced_down(created, True).forced_down is True
    assert sg.get_version_range(tag) == (7, 7)  # a forced-down service does not count
    assert sg.set_forced_down(created, False).forced_down is False
    assert sg.set_version(created, 6).version == 6
    assert sg.update(created).version == 6  # no change: the record as it is

    assert sg.get_version_range(tag) == (6, 7)
    assert (sg.get_min_version(tag), sg.get_max_version(tag)) == (6, 7)
    assert sg.get_version_range(tag, up_only=True) == (None, None)
    assert sg.get_version_range("no-such-binary-" + tag) == (None, None)

    sg.delete(other)
    assert raises(NotFound, lambda: sg.get(other.uuid)).key == other.uuid
    again = sg.register("h2", tag)
    assert again.uuid != other.uuid  # a deleted name registers anew
    assert sg.health()["driver"] == "db"


# -- liveness --------------------------------------------------------------------


def test_heartbeat_leave_and_is_up(sg: Front, tag: str) -> None:
    service = sg.register("h1", tag)
    assert not sg.is_up(service)
    sg.heartbeat(service)
    status = sg.get(service)
    assert status.state is State.UP and status.is_up and status.last_heartbeat is not None
    assert sg.is_up(service.uuid)
    assert [s.service.uuid for s in sg.get_all(binary=tag, state="up")] == [service.uuid]
    assert sg.get_version_range(tag, up_only=True) == (0, 0)
    sg.leave(service.uuid)
    assert sg.get(service).state is State.DOWN
    sg.heartbeat(service.uuid)  # back at its next beat
    assert sg.is_up(service)
    assert not sg.is_up(str(uuid.uuid4()))


def test_times_of_a_binary_its_own_or_the_defaults(sg: Front, tag: str) -> None:
    assert sg.times_of(FAST) == Times(FAST, 0.5, 3.0)
    default = sg.times_of(tag)  # no entry, no service: the defaults
    assert (default.binary, default.service_down_time) == (tag, DOWN_TIME)
    assert default.report_interval == REPORT_INTERVAL


def test_join_beats_until_leave(sg: Front, tag: str) -> None:
    service = sg.register("h1", tag)
    reporter = sg.join(service)
    wait_for(lambda: reporter.beats >= 1, "the reporter's first beat")
    assert reporter.alive and sg.is_up(service)
    sg.leave(service)
    assert not reporter.alive
    assert sg.get(service).state is State.DOWN


def test_join_beats_at_the_binarys_own_interval(sg: Front) -> None:
    """FAST beats every 0.5 s and is down after 3 s: a reporter at the 10 s default
    would let it go down between two beats."""
    service = sg.register("h-fast", FAST)
    reporter = sg.join(service)
    try:
        assert reporter.interval == sg.times_of(FAST).report_interval == 0.5
    finally:
        sg.leave(service)


def test_heartbeat_many_reports_the_beats_that_failed_alone(sg: Front, tag: str) -> None:
    fleet = [sg.register(f"h{i}", tag) for i in range(6)]
    gone = sg.register("gone", tag)
    sg.delete(gone)
    never = str(uuid.uuid4())
    # Services and uuid strings mixed, a duplicate, an unknown and a deleted one.
    failed = sg.heartbeat_many([*fleet[:3], *(s.uuid for s in fleet[3:]), fleet[0], never, gone])
    assert set(failed) == {never, gone.uuid}
    assert all(isinstance(error, NotFound) for error in failed.values())
    assert {s.service.uuid for s in sg.get_all(binary=tag, state="up")} == {s.uuid for s in fleet}
    assert sg.heartbeat_many([]) == {}


def test_heartbeat_many_checks_every_id_before_any_beat(sg: Front, tag: str) -> None:
    service = sg.register("h1", tag)
    error = raises(InvalidInput, lambda: sg.heartbeat_many([service, "not-a-uuid"]))
    assert (error.field, error.rule) == ("id", "must be a UUID")
    assert not sg.is_up(service)


# -- events ----------------------------------------------------------------------


def causes(batch: EventBatch) -> list[str]:
    return [event.cause for event in batch.events]


def test_events_pages_and_long_polls(sg: Front, tag: str) -> None:
    service = sg.register("h1", tag)
    first = sg.events(binary=tag)
    assert isinstance(first, EventBatch) and causes(first) == ["registered"]
    event = first.events[0]
    assert isinstance(event, Event)
    assert (event.service_id, event.host, event.binary, event.state) == (
        service.uuid,
        "h1",
        tag,
        "down",
    )
    assert first.cursor == event.id
    sg.set_disabled(service, True, "maintenance")
    sg.set_disabled(service, False)
    later = sg.events(since=first.cursor, binary=tag)
    assert causes(later) == ["disabled", "enabled"]
    assert causes(sg.events(since=first.cursor, binary=tag, limit=1)) == ["disabled"]
    assert sg.events(since=first.cursor, host="h1", binary=tag).events == later.events
    empty = sg.events(since=later.cursor, binary=tag, wait=0.05)
    assert (empty.events, empty.cursor) == ([], later.cursor)

    # A long-poll answers as soon as the event is written.
    answer: list[EventBatch] = []
    poll = threading.Thread(
        target=lambda: answer.append(sg.events(since=later.cursor, binary=tag, wait=30))
    )
    poll.start()
    time.sleep(0.2)  # let it start waiting; it returns at once otherwise, which is fine too
    sg.set_forced_down(service, True)
    poll.join()
    assert causes(answer[0]) == ["forced_down"]


def test_watch_calls_back_for_each_new_event(sg: Front, tag: str) -> None:
    service = sg.register("h1", tag)
    since = sg.events(binary=tag).cursor
    seen: list[Event] = []
    watcher = sg.watch(seen.append, since=since, binary=tag)
    try:
        sg.set_forced_down(service, True)
        sg.set_forced_down(service, False)
        wait_for(lambda: len(seen) >= 2, "the watcher's two events")
    finally:
        watcher.stop()
    assert [event.cause for event in seen] == ["forced_down", "forced_down_unset"]
    assert all(event.service_id == service.uuid for event in seen)
    assert raises(InvalidInput, lambda: sg.watch(seen.append, since=-1)).field == "since"


# -- claims ----------------------------------------------------------------------


def test_claim_renew_release_and_read(sg: Front, tag: str) -> None:
    owner = sg.register("h/1", tag)
    rid = f"{tag}/i-1.x"  # '/' and '.' in an id: a path segment over HTTP
    made = sg.claim(owner, "instance", rid, "rebuilding", {"step": 1})
    assert isinstance(made, Claim)
    assert (made.owner, made.incarnation, made.epoch, made.state) == (
        owner.uuid,
        sg.incarnation,
        1,
        "held",
    )
    assert (made.owner_host, made.owner_binary, made.details) == ("h/1", tag, {"step": 1})

    held = raises(
        ClaimHeld,
        lambda: sg.claim(owner, "instance", rid, "resizing", incarnation=str(uuid.uuid4())),
    )
    assert isinstance(held.holder, Claim)
    assert (held.holder.owner, held.holder.epoch, held.holder.operation) == (
        owner.uuid,
        1,
        "rebuilding",
    )
    assert "h/1" in str(held)

    renewed = sg.renew(made, {"step": 2})
    assert (renewed.epoch, renewed.details) == (1, {"step": 2})
    assert sg.renew(renewed).details == {"step": 2}  # no details given: kept
    assert sg.renew(renewed, None).details is None  # None given: cleared
    assert sg.get_claim("instance", rid) == sg.list_claims(owner=owner)[0]
    assert [c.resource_id for c in sg.list_claims(owner=owner.uuid, resource_type="instance")] == [
        rid
    ]
    assert sg.is_current(made)

    other = raises(ClaimLost, lambda: sg.renew(made, incarnation=str(uuid.uuid4())))
    assert other.claim == made and other.current.epoch == 1
    assert str(other).endswith("it was made by another incarnation")

    released = sg.release(made)
    assert (released.state, released.epoch) == ("released", 1)
    assert not sg.is_current(made)
    stale = raises(ClaimLost, lambda: sg.release(made))
    assert stale.claim == made and stale.current.state == "released"
    assert sg.list_claims(owner=owner, state="released")[0].resource_id == rid
    assert sg.list_claims(owner=owner, state="held") == []
    assert sg.lost_claims(owner) == []  # released by its owner: not lost


def test_force_release_and_lost_claims(sg: Front, tag: str) -> None:
    owner = sg.register("h1", tag)
    former = str(uuid.uuid4())  # a previous start of this service
    left = sg.claim(owner, "volume", f"{tag}-v1", "attaching", incarnation=former)
    assert [c.resource_id for c in sg.lost_claims(owner)] == [left.resource_id]
    assert sg.lost_claims(owner.uuid, incarnation=former) == []

    mine = sg.claim(owner, "volume", f"{tag}-v2", "attaching")
    freed = sg.force_release("volume", mine.resource_id, "stuck")
    assert (freed.epoch, freed.state, freed.reason) == (2, "released", "force_released: stuck")
    lost = raises(ClaimLost, lambda: sg.renew(mine))
    assert lost.claim == mine and lost.current.epoch == 2
    again = sg.claim(owner, "volume", mine.resource_id, "detaching")
    assert again.epoch == 3


# -- the exceptions, with their fields --------------------------------------------


# Each mistake, and the field and rule both fronts name: the daemon checks
# with the same validation.py, and the client checks what it sends no other way.
MISTAKES: dict[str, tuple[Callable[[Front, str], object], str, str]] = {
    "bad host": (
        lambda sg, tag: sg.register("bad\nhost", tag),
        "host",
        "must contain only printable characters",
    ),
    "bad service id": (lambda sg, tag: sg.get("not-a-uuid"), "id", "must be a UUID"),
    "bad state": (
        lambda sg, tag: sg.get_all(binary=tag, state="sideways"),
        "state",
        "must be one of up, down, unknown",
    ),
    "bad version": (
        lambda sg, tag: sg.update(sg.register("h", tag), version=-1),
        "version",
        "must be a non-negative integer",
    ),
    "bad up_only": (
        lambda sg, tag: sg.get_version_range(tag, up_only="yes"),
        "up_only",
        "must be true or false",
    ),
    "bad wait": (
        lambda sg, tag: sg.events(wait=61),
        "wait",
        "must be between 0 and 60 seconds",
    ),
    "bad resource type": (
        lambda sg, tag: sg.claim(sg.register("h", tag), "in stance", "i", "op"),
        "resource_type",
        "may contain only letters, digits, '_', '.' and '-'",
    ),
    "bad owner": (
        lambda sg, tag: sg.claim("nope", "instance", "i", "op"),
        "service_id",
        "must be a UUID",
    ),
    "empty resource id": (
        lambda sg, tag: sg.get_claim("instance", ""),
        "resource_id",
        "must not be empty",
    ),
    "bad claim state": (
        lambda sg, tag: sg.list_claims(state="lost"),
        "state",
        "must be one of held, recovering, released, deleted",
    ),
    "bad lost-claims owner": (
        lambda sg, tag: sg.lost_claims("nope"),
        "service_id",
        "must be a UUID",
    ),
    "bad binary of times": (
        lambda sg, tag: sg.times_of(" padded"),
        "binary",
        "must not have leading or trailing whitespace",
    ),
    "not a token": (
        lambda sg, tag: sg.renew("not a claim"),
        "claim",
        "must be a Claim returned by claim() or renew()",
    ),
    "not a token either": (
        lambda sg, tag: sg.is_current({"epoch": 1}),
        "claim",
        "must be a Claim returned by claim() or renew()",
    ),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_invalid_input_names_the_field_and_the_rule(sg: Front, tag: str, mistake: str) -> None:
    call, field, rule = MISTAKES[mistake]
    error = raises(InvalidInput, lambda: call(sg, tag))
    assert (error.field, error.rule) == (field, rule)


def test_not_found_names_what_is_missing(sg: Front, tag: str) -> None:
    unknown = str(uuid.uuid4())
    for call in (sg.get, sg.heartbeat, sg.leave, sg.delete, lambda s: sg.update(s, version=1)):
        error = raises(NotFound, lambda call=call: call(unknown))
        assert (error.kind, error.key) == ("service", unknown)
    missing = raises(NotFound, lambda: sg.get_claim("instance", f"{tag}/none"))
    assert (missing.kind, missing.key) == ("claim", f"instance/{tag}/none")
    forced = raises(NotFound, lambda: sg.force_release("instance", f"{tag}/none", "why"))
    assert (forced.kind, forced.key) == ("claim", f"instance/{tag}/none")
    owner = raises(NotFound, lambda: sg.claim(unknown, "instance", "i", "op"))
    assert (owner.kind, owner.key) == ("service", unknown)


def test_backend_error_names_the_backend(broken: Front, tag: str) -> None:
    service = broken.register("h1", tag)  # records are SQL: still fine
    error = raises(BackendError, lambda: broken.heartbeat(service))
    assert error.backend == "memcached"
    assert raises(BackendError, lambda: broken.heartbeat_many([service])).backend == "memcached"
    assert raises(BackendError, broken.health).backend == "memcached"
    # Reads go on: a state the backend cannot give is unknown, not an error.
    assert broken.get(service).state is State.UNKNOWN
