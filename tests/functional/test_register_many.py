"""Registration in batches (records.register_many), on every SQL dialect.

A fleet's cold start registers thousands of services a second through the
daemon's group commit; these pin what a batch means: each answer in order,
restarts keep their uuid, one event per new service in commit order, and a
batch is written whole or not at all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from servicegroup import Registration, ServiceGroup
from servicegroup.db import records
from servicegroup.db.models import event_sequence
from servicegroup.exceptions import InvalidInput

BATCH = 1200  # over REGISTER_CHUNK, so the chunking is exercised


def test_a_batch_registers_new_services_and_restarts_in_order(
    sql_url: str, make_group: Callable[..., ServiceGroup]
) -> None:
    assert BATCH > records.REGISTER_CHUNK
    sg = make_group(sql_url)
    before = sg.register("h0", "compute", topic="t", availability_zone="az1", version=1)
    regs = [Registration(f"h{i}", "compute", version=2) for i in range(BATCH)]
    regs.append(Registration("h5", "compute", version=7, availability_zone="az5"))
    answers = sg.register_many(regs)

    assert [created for _, created in answers] == [False] + [True] * (BATCH - 1) + [False]
    assert answers[0][0].uuid == before.uuid  # a restart keeps its uuid...
    assert (answers[0][0].topic, answers[0][0].availability_zone) == ("t", "az1")  # ...and fields
    assert answers[0][0].version == 2
    # The same name twice in a batch: a registration, then a restart; both see the final record.
    assert answers[5][0] == answers[-1][0]
    assert (answers[5][0].version, answers[5][0].availability_zone) == (7, "az5")
    assert len({service.uuid for service, _ in answers}) == BATCH
    assert {s.service.host for s in sg.get_all()} == {f"h{i}" for i in range(BATCH)}

    events = [e for e in _all_events(sg) if e.cause == "registered"]
    assert [e.host for e in events] == ["h0"] + [f"h{i}" for i in range(1, BATCH)]
    assert [e.id for e in events] == sorted(e.id for e in events)

    again = sg.register_many([Registration(f"h{i}", "compute", version=2) for i in range(BATCH)])
    assert not any(created for _, created in again)
    assert [s.uuid for s, _ in again] == [s.uuid for s, _ in answers[:BATCH]]
    assert len([e for e in _all_events(sg) if e.cause == "registered"]) == BATCH


@pytest.mark.parametrize("expect_new", [False, True], ids=["look-up-first", "insert-first"])
def test_a_mixed_batch_is_answered_alike_whichever_kind_it_expects(
    sql_url: str, make_group: Callable[..., ServiceGroup], expect_new: bool
) -> None:
    """expect_new only orders the statements (PostgreSQL inserts first): same answers, rows,
    events."""
    sg = make_group(sql_url)
    before = sg.register("h0", "compute", topic="t", availability_zone="az1", version=1)
    regs = [
        Registration("h1", "compute", version=3),
        Registration("h0", "compute", version=2),
        Registration("h1", "compute", version=4, availability_zone="az9"),
        Registration("h2", "compute"),
    ]
    done = records.register_many(sg.engine, regs, expect_new=expect_new)

    assert [created for _, created in done.answers] == [True, False, False, True]
    first, restarted, again, other = [service for service, _ in done.answers]
    assert restarted.uuid == before.uuid
    assert (restarted.version, restarted.topic, restarted.availability_zone) == (2, "t", "az1")
    assert first == again and (first.version, first.availability_zone) == (4, "az9")
    assert done.inserted == {first.uuid, other.uuid}
    assert sorted(s.service.host for s in sg.get_all()) == ["h0", "h1", "h2"]
    events = [e for e in _all_events(sg) if e.cause == "registered"]
    assert sorted(e.host for e in events) == ["h0", "h1", "h2"]


def test_a_bad_registration_is_refused_before_anything_is_written(
    sql_url: str, make_group: Callable[..., ServiceGroup]
) -> None:
    sg = make_group(sql_url)
    with pytest.raises(InvalidInput, match="host"):
        sg.register_many([Registration("ok", "compute"), Registration("", "compute")])
    with pytest.raises(InvalidInput, match="version"):
        Registration("h", "b", version=-1)
    assert sg.get_all() == []


def test_a_failed_batch_writes_nothing(
    sql_url: str, make_group: Callable[..., ServiceGroup], monkeypatch: pytest.MonkeyPatch
) -> None:
    sg = make_group(sql_url)

    def broken_append(*_args: object) -> list[int]:
        raise RuntimeError("injected failure after the INSERT")

    monkeypatch.setattr(records.event_log, "append", broken_append)
    with pytest.raises(RuntimeError, match="injected"):
        sg.register_many([Registration(f"h{i}", "compute") for i in range(10)])
    monkeypatch.undo()
    assert sg.get_all() == []
    assert _all_events(sg) == []


def test_a_batch_reseeds_an_emptied_event_sequence_and_continues_its_ids(
    sql_url: str, make_group: Callable[..., ServiceGroup]
) -> None:
    """A batch takes the append lock with its append; with no sequence row it seeds one."""
    sg = make_group(sql_url)
    sg.register_many([Registration(f"h{i}", "compute") for i in range(3)])
    with sg.engine.begin() as conn:
        conn.execute(sa.delete(event_sequence))
    sg.register_many([Registration(f"h{i}", "compute") for i in range(3, 6)])
    assert [e.id for e in _all_events(sg)] == [1, 2, 3, 4, 5, 6]


def test_racing_batches_for_the_same_names_make_one_record_each(
    sql_url: str, make_group: Callable[..., ServiceGroup]
) -> None:
    """Two processes' cold starts meet at the unique constraint; the loser runs again.

    Half the batches name the services in the opposite order: the rows are
    inserted in name order whatever the batch's, so they wait for each other
    rather than deadlock. Every answer still follows its own batch's order.
    Half insert first (PostgreSQL's order for an expected cold start), half
    look up first, so the two orders race each other too.
    """
    groups = [make_group(sql_url) for _ in range(4)]
    results: list[list[tuple[object, bool]]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(groups))

    def register(sg: ServiceGroup, backwards: bool, expect_new: bool) -> None:
        names = [f"h{i:02}" for i in range(50)]
        start.wait()
        try:
            regs = [Registration(n, "b") for n in names[:: -1 if backwards else 1]]
            answers = records.register_many(sg.engine, regs, expect_new=expect_new).answers
            results.append(answers[:: -1 if backwards else 1])
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=register, args=(sg, n % 2 == 1, n < 2))
        for n, sg in enumerate(groups)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    uuids = {tuple(s.uuid for s, _ in answer) for answer in results}  # type: ignore[attr-defined]
    assert len(uuids) == 1  # every batch answered with the same records
    assert [s.host for s, _ in results[0]] == [f"h{i:02}" for i in range(50)]  # type: ignore[attr-defined]
    assert sum(created for answer in results for _, created in answer) == 50
    assert len(groups[0].get_all()) == 50


def _all_events(sg: ServiceGroup) -> list:
    events, cursor = [], 0
    while True:
        batch = sg.read_events(cursor, None, None, 1000)
        if not batch.events:
            return events
        events += batch.events
        cursor = batch.cursor
