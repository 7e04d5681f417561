"""Alembic environment: runs on the engine handed over in config.attributes."""

from alembic import context

from servicegroup.db.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    context.run_migrations()
