"""Claims on every SQL dialect: the token rules, fencing, force-release, races.

Races run with threads AND processes, since the guarantee is about
statements meeting in the database, not about one Python process's locks.
"""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from collections import defaultdict

import pytest
import sqlalchemy as sa

from servicegroup import ServiceGroup
from servicegroup.claims import fence, fence_sql
from servicegroup.exceptions import ClaimHeld, ClaimLost, InvalidInput, NotFound

ROUNDS = 6


@pytest.fixture
def group(sql_url: str, make_group) -> ServiceGroup:
    return make_group(sql_url)


def test_claim_renew_release_and_epochs(group: ServiceGroup) -> None:
    a = group.register("host-a", "compute")
    b = group.register("host-b", "compute")
    first = group.claim(a, "compute", "i-1", "rebuilding", {"step": 1})
    assert (first.epoch, first.state, first.owner) == (1, "held", a.uuid)
    assert first.incarnation == group.incarnation
    assert (first.owner_host, first.owner_binary, first.details) == (
        "host-a",
        "compute",
        {"step": 1},
    )
    with pytest.raises(ClaimHeld) as held:
        group.claim(b, "compute", "i-1", "migrating")
    message = str(held.value)
    for part in (a.uuid, "host-a", "compute", "rebuilding", "epoch 1"):
        assert part in message
    assert held.value.holder.owner == a.uuid
    renewed = group.renew(first, details={"step": 2})
    assert renewed.epoch == 1 and renewed.details == {"step": 2}
    assert renewed.updated_at >= first.updated_at
    assert group.is_current(first)
    released = group.release(renewed)
    assert released.state == "released" and released.epoch == 1
    assert not group.is_current(first)
    again = group.claim(b, "compute", "i-1", "migrating")
    assert again.epoch == 2 and again.owner == b.uuid
    assert group.get_claim("compute", "i-1") == again


def test_stale_token_is_lost_and_changes_nothing(group: ServiceGroup) -> None:
    a = group.register("host-a", "compute")
    old = group.claim(a, "compute", "i-1", "rebuilding")
    group.release(old)
    new = group.claim(a, "compute", "i-1", "rebuilding")
    for action in (group.renew, group.release):
        with pytest.raises(ClaimLost) as lost:
            action(old)
        assert "claim lost" in str(lost.value) and "epoch 2" in str(lost.value)
    assert group.get_claim("compute", "i-1") == new
    # Same epoch, another incarnation (a restarted process): lost too.
    other = ServiceGroup(group.conf)
    try:
        from dataclasses import replace

        with pytest.raises(ClaimLost):
            other.renew(replace(new, incarnation=other.incarnation))
    finally:
        other.close()
    assert group.get_claim("compute", "i-1") == new


def test_fence_guards_an_application_update(group: ServiceGroup) -> None:
    a = group.register("host-a", "compute")
    engine = group.engine
    tasks = sa.Table(
        f"tasks_{uuid.uuid4().hex[:8]}",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("state", sa.String(32)),
    )
    tasks.create(engine)
    try:
        with engine.begin() as conn:
            conn.execute(tasks.insert().values(id=1, state="active"))
        claim = group.claim(a, "compute", "1", "rebuilding")

        def write(state: str, token) -> int:
            with engine.begin() as conn:
                stmt = tasks.update().where((tasks.c.id == 1) & fence(token)).values(state=state)
                return conn.execute(stmt).rowcount

        assert write("rebuilding", claim) == 1
        group.force_release("compute", "1", "test")
        assert write("zombie", claim) == 0  # the former holder's late write
        successor = group.claim(a, "compute", "1", "rebuilding")
        assert write("active", successor) == 1
        # The plain-SQL variant, in the driver's own paramstyle.
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            # Positional marks: sqlite3 takes ?, psycopg and PyMySQL take %s.
            paramstyle = "qmark" if engine.dialect.dbapi.paramstyle == "qmark" else "format"
            mark = "?" if paramstyle == "qmark" else "%s"
            condition, params = fence_sql(claim, paramstyle)
            cursor.execute(
                f"UPDATE {tasks.name} SET state = {mark} WHERE id = 1 AND {condition}",
                ("zombie", *params),
            )
            assert cursor.rowcount == 0
            condition, params = fence_sql(successor, paramstyle)
            cursor.execute(
                f"UPDATE {tasks.name} SET state = {mark} WHERE id = 1 AND {condition}",
                ("done", *params),
            )
            assert cursor.rowcount == 1
            raw.commit()
        finally:
            raw.close()
        with engine.connect() as conn:
            assert conn.execute(sa.select(tasks.c.state)).scalar_one() == "done"
    finally:
        tasks.drop(engine)


def test_force_release_bumps_the_epoch_and_is_an_event(group: ServiceGroup) -> None:
    a = group.register("host-a", "compute")
    claim = group.claim(a, "compute", "i-1", "rebuilding")
    freed = group.force_release("compute", "i-1", "stuck since Tuesday")
    assert (freed.state, freed.epoch) == ("released", 2)
    assert freed.reason == "force_released: stuck since Tuesday"
    with pytest.raises(ClaimLost):
        group.renew(claim)
    event = group.events().events[-1]
    assert event.cause == "claim_force_released"
    assert event.service_id == a.uuid and event.previous == event.state
    assert event.details == {
        "resource_type": "compute",
        "resource_id": "i-1",
        "operation": "rebuilding",
        "previous_state": "held",
        "previous_epoch": 1,
        "epoch": 2,
        "incarnation": claim.incarnation,
        "reason": "stuck since Tuesday",
    }
    again = group.force_release("compute", "i-1", "twice")  # already free: no-op
    assert again.epoch == 2 and group.events().events[-1].id == event.id
    with pytest.raises(NotFound):
        group.force_release("compute", "nothing", "x")


def test_lists_and_lost_claims_after_a_restart(group: ServiceGroup, make_group) -> None:
    a = group.register("host-a", "compute")
    b = group.register("host-b", "compute")
    kept = group.claim(a, "compute", "i-1", "rebuilding")
    done = group.claim(a, "compute", "i-2", "rebuilding")
    group.release(done)
    taken = group.claim(a, "stack", "s-1", "updating")
    group.force_release("stack", "s-1", "operator")
    group.claim(b, "compute", "i-3", "spawning")
    assert [c.resource_id for c in group.list_claims(owner=a)] == ["i-1", "i-2", "s-1"]
    assert [c.resource_id for c in group.list_claims(state="held")] == ["i-1", "i-3"]
    assert [c.resource_id for c in group.list_claims(resource_type="stack")] == ["s-1"]
    assert group.lost_claims(a) == []  # same incarnation: nothing lost
    restarted = make_group(group.conf.database.connection)
    assert restarted.incarnation != group.incarnation
    lost = restarted.lost_claims(a)
    # Still held by the former self, and force-released; not the one it released.
    assert [(c.resource_id, c.state) for c in lost] == [("i-1", "held"), ("s-1", "released")]
    with pytest.raises(ClaimLost):
        restarted.renew(lost[0])  # a lost claim can never be renewed...
    from dataclasses import replace

    with pytest.raises(ClaimLost):
        restarted.renew(replace(kept, incarnation=restarted.incarnation))  # ...even re-badged
    assert taken.epoch == 1


@pytest.mark.parametrize(
    "args, field",
    [
        (("", "i-1", "op"), "resource_type"),
        (("compute type", "i-1", "op"), "resource_type"),
        (("a:b", "i-1", "op"), "resource_type"),
        (("compute", "", "op"), "resource_id"),
        (("compute", " i-1", "op"), "resource_id"),
        (("compute", "x" * 256, "op"), "resource_id"),
        (("compute", "i-1", "re=build"), "operation"),
        (("compute", "i-1", "o" * 65), "operation"),
    ],
)
def test_invalid_input(sqlite_url: str, make_group, args, field) -> None:
    group = make_group(sqlite_url)
    a = group.register("host-a", "compute")
    with pytest.raises(InvalidInput) as invalid:
        group.claim(a, *args)
    assert invalid.value.field == field


def test_details_rules_and_unknown_owner(sqlite_url: str, make_group) -> None:
    group = make_group(sqlite_url)
    a = group.register("host-a", "compute")
    for bad in (["list"], "text", {"big": "x" * 5000}, {"nan": float("nan")}):
        with pytest.raises(InvalidInput) as invalid:
            group.claim(a, "compute", "i-1", "op", bad)  # type: ignore[arg-type]
        assert invalid.value.field == "details"
    with pytest.raises(NotFound):
        group.claim(str(uuid.uuid4()), "compute", "i-1", "op")
    with pytest.raises(NotFound):
        group.lost_claims(str(uuid.uuid4()))
    held = group.claim(a, "compute", "i-1", "op")
    group.delete(a)
    with pytest.raises(NotFound):
        group.claim(a, "compute", "i-1", "op")
    with pytest.raises(NotFound):
        group.lost_claims(a)  # gone with its service...
    assert group.list_claims(owner=a) == [held]  # ...while its claims are still listed
    with pytest.raises(InvalidInput):
        group.renew("not a claim")  # type: ignore[arg-type]


# -- races -----------------------------------------------------------------------


def _contend(group: ServiceGroup, owner: str, resource: str) -> int | None:
    try:
        return group.claim(owner, "race", resource, "op").epoch
    except ClaimHeld:
        return None


def _check_rounds(results: dict[tuple[int, str], list[int | None]]) -> None:
    last: dict[str, int] = {}
    for (rnd, resource), outcomes in sorted(results.items()):
        winners = [e for e in outcomes if e is not None]
        assert len(winners) == 1, f"round {rnd} {resource}: {outcomes}"
        key = "shared" if resource == "shared" else resource
        assert winners[0] > last.get(key, 0), f"epoch went back in round {rnd}"
        last[key] = winners[0]
    assert last["shared"] == ROUNDS  # one acquire per round, nothing else bumped it


def test_race_threads(group: ServiceGroup) -> None:
    workers = 6
    owners = [group.register(f"host-{i}", "compute").uuid for i in range(workers)]
    barrier = threading.Barrier(workers)
    results: dict[tuple[int, str], list[int | None]] = defaultdict(list)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for rnd in range(ROUNDS):
                for resource in ("shared", f"fresh-{rnd}"):
                    barrier.wait()
                    epoch = _contend(group, owners[i], resource)
                    with lock:
                        results[rnd, resource].append(epoch)
                barrier.wait()
                if i == 0:  # the winner would release; all threads share one incarnation
                    group.release(group.get_claim("race", "shared"))
                barrier.wait()
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    _check_rounds(results)


def _process_worker(url: str, owner: str, index: int, barrier, queue) -> None:  # pragma: no cover
    group = ServiceGroup.from_options(database__connection=url)
    try:
        for rnd in range(ROUNDS):
            for resource in ("shared", f"fresh-{rnd}"):
                barrier.wait(timeout=60)
                queue.put((rnd, resource, index, _contend(group, owner, resource)))
            barrier.wait(timeout=60)
            won = group.get_claim("race", "shared")
            if won.incarnation == group.incarnation:  # the winner releases
                group.release(won)
            barrier.wait(timeout=60)
    finally:
        group.close()


def test_race_processes(sql_url: str, make_group) -> None:
    group = make_group(sql_url)
    workers = 3
    owners = [group.register(f"host-{i}", "compute").uuid for i in range(workers)]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers)
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_process_worker, args=(sql_url, owners[i], i, barrier, queue))
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    results: dict[tuple[int, str], list[int | None]] = defaultdict(list)
    for _ in range(workers * ROUNDS * 2):
        rnd, resource, _index, epoch = queue.get(timeout=120)
        results[rnd, resource].append(epoch)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    _check_rounds(results)
