"""The schema: models and migrations agree, and the API refuses a stale database.

The model is what queries are written against; the migrations are what
production databases get. If they drift, a query can work in tests on
create_all() and fail in production, so they are compared on each dialect.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from servicegroup import ServiceGroup
from servicegroup.db import migration
from servicegroup.db.engine import make_engine
from servicegroup.db.models import Base, services
from servicegroup.exceptions import SchemaOutOfDate
from tests import conftest
from tests.servers import ServerUnavailable, scratch_database


def test_models_match_migrations(sql_url) -> None:
    engine = make_engine(sql_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn)
            # Types are compared by default since Alembic 1.12: say so, so a
            # change of default cannot quietly weaken this test.
            assert context.opts.get("compare_type", True) is not False
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_server_defaults_fill_a_minimal_row(sql_url) -> None:
    # Alembic's compare_server_default misreads false() against MySQL's
    # DEFAULT 0, so defaults are checked by what they do: a row inserted with
    # only the required columns, as an older writer would, reads as a fresh
    # live record.
    engine = make_engine(sql_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO services (uuid, host, " + _quote(conn, "binary") + ", created_at)"
                    " VALUES ('00000000-0000-4000-8000-000000000001', 'h', 'b', :now)"
                ),
                {"now": datetime.now(UTC).replace(tzinfo=None)},
            )
            row = conn.execute(sa.select(services)).one()._mapping
    finally:
        engine.dispose()
    assert (row["version"], row["report_count"], row["deleted"]) == (0, 0, 0)
    assert (bool(row["disabled"]), bool(row["forced_down"])) == (False, False)
    assert row["last_seen_up"] is None and row["deleted_at"] is None


def _quote(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(name)


def test_migrated_database_is_at_head(sql_url) -> None:
    engine = make_engine(sql_url)
    try:
        assert migration.current(engine) == migration.head()
        migration.check(engine)  # does not raise
    finally:
        engine.dispose()


def test_head_constant_is_the_scripts_head() -> None:
    # check() compares with HEAD so that it need not import alembic.
    assert migration.head() == migration.HEAD


def test_checking_the_schema_imports_no_alembic(sqlite_url) -> None:
    # alembic (with mako, pygments, every dialect) is 10 MB resident in each
    # daemon and agent; a ServiceGroup only compares revisions. A fresh
    # process, since this one imported alembic to migrate.
    code = (
        "import sys\n"
        "from servicegroup import ServiceGroup\n"
        f"with ServiceGroup.from_options(database__connection={sqlite_url!r}) as sg:\n"
        "    sg.register('compute-1', 'nova-compute')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture(params=conftest.SQL_DIALECTS)
def blank_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A database with no schema at all, on each dialect: what a first install sees."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'blank.sqlite'}"
        return
    admin_url = conftest.POSTGRESQL_ADMIN if request.param == "postgresql" else conftest.MYSQL_ADMIN
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(scratch_database(admin_url, "sg_blank", migrate=False))
        except ServerUnavailable as exc:
            conftest.unavailable(request.param, exc)
        yield url


def refused(url: str) -> SchemaOutOfDate:
    with pytest.raises(SchemaOutOfDate) as info:
        ServiceGroup.from_options(database__connection=url)
    assert "servicegroup db upgrade" in str(info.value)
    return info.value


def table_names(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_empty_database_is_refused_then_upgrade_fixes_it(blank_url) -> None:
    err = refused(blank_url)
    assert "has no servicegroup schema" in str(err)
    # Refusing writes nothing: no table, not even alembic_version.
    assert table_names(blank_url) == set()

    engine = make_engine(blank_url)
    try:
        migration.upgrade(engine)
        migration.upgrade(engine)  # a second upgrade is a no-op, as `make run` relies on
        assert migration.current(engine) == migration.head()
    finally:
        engine.dispose()
    with ServiceGroup.from_options(database__connection=blank_url) as group:
        assert group.register("compute-1", "nova-compute").uuid


def test_unknown_revision_is_refused(blank_url) -> None:
    # What an older servicegroup sees after a newer one upgraded the database:
    # a revision it does not know. It must not write with its older model.
    engine = make_engine(blank_url)
    try:
        migration.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff_future'"))
    finally:
        engine.dispose()
    err = refused(blank_url)
    assert "is at revision ffff_future" in str(err)
    assert migration.head() in str(err)


def test_schema_without_alembic_row_is_refused(blank_url) -> None:
    # Tables made by hand (create_all) are not a migrated schema: refuse them too.
    engine = make_engine(blank_url)
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()
    assert "has no servicegroup schema" in str(refused(blank_url))


def test_the_comparison_sees_a_drift(sqlite_url) -> None:
    # Guards the guard: a model column the migrations lack must show up.
    drifted = sa.MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(drifted)
    drifted.tables["services"].append_column(sa.Column("extra", sa.Integer))
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), drifted)
    finally:
        engine.dispose()
    assert [d[0] for d in diff] == ["add_column"]
    assert diff[0][3].name == "extra"
