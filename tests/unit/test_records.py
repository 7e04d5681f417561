"""db/records.py's fast read path: raw rows become the same Services, reused while unchanged."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from servicegroup.db import records
from servicegroup.db.engine import make_engine
from servicegroup.db.records import Reuse, _service, _utc, to_service
from servicegroup.service import Registration, Service
from tests.conftest import sqlite_db
from tests.helpers import AT, VALUES


@pytest.mark.parametrize(
    "stored",
    [
        "2026-11-24 06:22:18.123456",  # SQLite, SQLAlchemy's storage format
        "2026-11-24 06:22:18.123",  # SQLite, server_now()'s strftime %f
        AT.replace(tzinfo=None),  # psycopg / PyMySQL: naive UTC
        AT.astimezone(timezone(timedelta(hours=2))),  # an aware one, any zone
    ],
)
def test_stored_timestamps_become_aware_utc(stored: object) -> None:
    value = _utc(stored)
    assert value is not None and value.utcoffset() == timedelta(0)
    assert abs(value - AT) < timedelta(milliseconds=1)
    assert _utc(None) is None


def test_to_service_from_a_raw_sqlite_row() -> None:
    # id, uuid, host, binary, topic, az, version, report_count, disabled,
    # disabled_reason, forced_down, last_seen_up, created_at, updated_at,
    # deleted_at, deleted, observed_state, observed_at, db_now
    text = "2026-11-24 06:22:18.123456"
    row = (1, "u", "h", "b", None, "az", 3, 7, 0, None, 1, text, text, None, None, 0, "up", text)
    assert to_service(row) == Service(*VALUES)


# query()'s rows: Service's fields as SQLite stores them, then the server's clock.
TEXT = "2026-11-24 06:22:18.123456"
ROW = ("u", "h", "b", None, "az", 3, 7, 0, None, 1, TEXT, TEXT, None, 0, None, "up", TEXT)
# A different stored value for each column, of the type it is stored with.
OTHER = ("-", "h2", "b2", "t", "az2", 4, 8, 1, "why", 0, "2027-01-01 00:00:00", TEXT[:-3], TEXT)
OTHER += (1, TEXT, "down")


def rows(*uuids: str, **changed: object) -> list[tuple]:
    """query()-shaped rows, one per uuid, with columns changed by name; a fresh clock each."""
    names = [f.name for f in dataclasses.fields(Service)]
    out = []
    for uuid in uuids:
        row = list(ROW)
        row[0] = uuid
        for name, value in changed.items():
            row[names.index(name)] = value
        row[-1] = datetime.now(UTC).isoformat(sep=" ")[:26]  # differs on every read
        out.append(tuple("".join(v) if isinstance(v, str) else v for v in row))  # fresh objects
    return out


def test_reuse_hands_back_the_same_service_for_an_unchanged_row() -> None:
    reuse = Reuse()
    first = reuse.services(rows("u1", "u2"))
    again = reuse.services(rows("u1", "u2"))
    assert [s is t for s, t in zip(first, again, strict=True)] == [True, True]
    assert first == [to_service_row(r) for r in rows("u1", "u2")]


def to_service_row(row: tuple) -> Service:
    return _service(row[:-1])


@pytest.mark.parametrize("column", range(1, len(ROW) - 1))
def test_reuse_never_returns_a_stale_service(column: int) -> None:
    name = dataclasses.fields(Service)[column].name
    reuse = Reuse()
    before = reuse.services(rows("u1", "u2"))
    changed = rows("u1", "u2", **{name: OTHER[column]})
    after = reuse.services(changed)
    assert after == [to_service_row(r) for r in changed]
    assert all(a is not b and a != b for a, b in zip(after, before, strict=True))
    assert before == [to_service_row(r) for r in rows("u1", "u2")]  # old values untouched
    # Changing back is a change too.
    assert reuse.services(rows("u1", "u2")) == before


def fresh(text: str) -> str:
    """An equal string that is a new object, as a DBAPI hands out for each row."""
    copy = (text + ".")[:-1]
    assert copy is not text
    return copy


NAMES = {"binary": "nova-compute", "topic": "compute", "availability_zone": "az-1"}


def named_rows(*uuids: str) -> list[tuple]:
    names = {**NAMES, "observed_state": "up", "host": "host-1"}
    return rows(*uuids, **{name: fresh(value) for name, value in names.items()})


def test_services_share_the_names_that_repeat_on_every_row() -> None:
    reuse = Reuse()
    first, second = reuse.services(named_rows("u1") + named_rows("u2"))
    assert first == to_service_row(named_rows("u1")[0])
    for name in ("binary", "topic", "availability_zone", "observed_state"):
        assert getattr(first, name) is getattr(second, name), name
    assert first.host is not second.host  # a name of its own is left alone
    kept = [fields for fields, _ in reuse.cache.entries.values()]
    assert kept[0][2] is kept[1][2]  # so do the fields it compares with the next rows


def test_reuse_forgets_only_what_a_read_of_every_live_service_left_out() -> None:
    reuse = Reuse()
    kept = reuse.services(rows("u1", "u2", "u3"))[1]
    assert reuse.services(rows("u2")) == [kept]  # a filtered read says nothing about the rest
    assert set(reuse.cache.entries) == {"u1", "u2", "u3"}
    reuse.cache.keep_only({"u2"})
    assert set(reuse.cache.entries) == {"u2"}  # deleted services leave
    assert reuse.services(rows("u2"))[0] is kept


def test_reuse_is_safe_across_threads() -> None:
    # Readers of one scope race with rows that keep changing: each must get
    # exactly the Services of the rows it passed, never another read's.
    reuse = Reuse()
    variants = [rows("u1", "u2", "u3", version=v) for v in range(4)]
    expected = [[to_service_row(r) for r in v] for v in variants]
    failures: list[str] = []

    def reader(offset: int) -> None:
        for i in range(300):
            k = (i + offset) % len(variants)
            if reuse.services(variants[k]) != expected[k]:
                failures.append(f"reader {offset} read {i}")

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


@pytest.mark.parametrize("reuse", [None, Reuse()])
def test_a_read_converts_its_rows_a_chunk_at_a_time(
    tmp_path, monkeypatch: pytest.MonkeyPatch, reuse: Reuse | None
) -> None:
    """Every row of every chunk, in order, with the clock of the first."""
    engine = make_engine(sqlite_db(tmp_path))
    records.register_many(engine, [Registration(f"host-{i}", "compute") for i in range(7)])
    monkeypatch.setattr(records, "FETCH_CHUNK", 3)
    got = records.query(engine, reuse=reuse)
    assert [s.host for s in got.services] == [f"host-{i}" for i in range(7)]
    assert got.db_now is not None
    assert records.query(engine, reuse=reuse, binary="nothing").db_now is None
    engine.dispose()
