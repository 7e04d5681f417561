"""Alembic, driven from code: no alembic.ini to find, one URL to pass.

The schema is created and upgraded only here; everything else refuses to run
on a database that is not at the head revision, so an old binary can never
write to a newer schema or a new one to an older.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from servicegroup.exceptions import SchemaOutOfDate

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def head() -> str:
    heads = ScriptDirectory(str(MIGRATIONS)).get_heads()
    assert len(heads) == 1, f"migrations have several heads: {heads}"
    return heads[0]


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def check(engine: Engine) -> None:
    """Raise SchemaOutOfDate unless the database is at the latest revision."""
    have, want = current(engine), head()
    if have != want:
        state = "has no servicegroup schema" if have is None else f"is at revision {have}"
        raise SchemaOutOfDate(
            f"the database {state}, but this servicegroup needs revision {want}: "
            "run `servicegroup db upgrade`"
        )
