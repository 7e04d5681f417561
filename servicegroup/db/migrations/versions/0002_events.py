"""service events, event sequence, leases; observed state on services

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.add_column(sa.Column("observed_state", sa.String(16), nullable=True))
        batch.add_column(sa.Column("observed_at", Timestamp, nullable=True))
    op.create_table(
        "service_events",
        sa.Column("id", Id, primary_key=True, autoincrement=False),
        sa.Column("service_id", sa.String(36), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("binary", sa.String(255), nullable=False),
        sa.Column("previous", sa.String(16), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("cause", sa.String(32), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_service_events"),
    )
    op.create_index("ix_service_events_created_at", "service_events", ["created_at"])
    sequence = op.create_table(
        "event_sequence",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("name", name="pk_event_sequence"),
    )
    op.bulk_insert(sequence, [{"name": "events", "last_id": 0}])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_table("event_sequence")
    op.drop_index("ix_service_events_created_at", table_name="service_events")
    op.drop_table("service_events")
    with op.batch_alter_table("services") as batch:
        batch.drop_column("observed_at")
        batch.drop_column("observed_state")
