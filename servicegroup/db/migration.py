"""Alembic, driven from code: no alembic.ini to find, one URL to pass.

The schema is created and upgraded only here; everything else refuses to run
on a database that is not at the head revision, so an old binary can never
write to a newer schema or a new one to an older.

The check, which every ServiceGroup makes at start, does not import alembic:
alembic brings mako, pygments and every SQLAlchemy dialect, 10 MB resident
(134 modules) in every daemon and agent that only needs to compare two
strings. So HEAD names the newest revision (a test keeps it equal to the
scripts' head) and current() reads alembic's version table with one SELECT;
alembic is imported only to upgrade or to read the scripts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, column, inspect, select, table

from servicegroup.exceptions import SchemaOutOfDate

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions: bump it with every new script.
HEAD = "0004"
# Alembic's default, which env.py keeps.
VERSION_TABLE = "alembic_version"


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def head() -> str:
    """The head of the migration scripts themselves (what HEAD must say)."""
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory(str(MIGRATIONS)).get_heads()
    assert len(heads) == 1, f"migrations have several heads: {heads}"
    return heads[0]


def current(engine: Engine) -> str | None:
    """The revision the database is at; None when it has no version table or row."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        versions = table(VERSION_TABLE, column("version_num"))
        rows = conn.execute(select(versions.c.version_num)).scalars().all()
    if len(rows) > 1:
        # Branches, which this linear history never makes: not a schema we know.
        return ",".join(sorted(rows))
    return rows[0] if rows else None


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def check(engine: Engine) -> None:
    """Raise SchemaOutOfDate unless the database is at the latest revision."""
    have, want = current(engine), HEAD
    if have != want:
        state = "has no servicegroup schema" if have is None else f"is at revision {have}"
        raise SchemaOutOfDate(
            f"the database {state}, but this servicegroup needs revision {want}: "
            "run `servicegroup db upgrade`"
        )
