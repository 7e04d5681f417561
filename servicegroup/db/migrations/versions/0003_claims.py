"""claims; details on service events

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("service_events") as batch:
        batch.add_column(sa.Column("details", sa.Text(), nullable=True))
    op.create_table(
        "claims",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(255), nullable=False),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(36), nullable=False),
        sa.Column("incarnation", sa.String(36), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("claimed_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("details", sa.Text(), nullable=True),
        sa.Column("reason", sa.String(255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("retry_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_claims"),
        sa.UniqueConstraint(
            "resource_type", "resource_id", name="uq_claims_resource_type_resource_id"
        ),
    )
    op.create_index("ix_claims_owner", "claims", ["owner"])
    op.create_index("ix_claims_state", "claims", ["state"])


def downgrade() -> None:
    op.drop_index("ix_claims_state", table_name="claims")
    op.drop_index("ix_claims_owner", table_name="claims")
    op.drop_table("claims")
    with op.batch_alter_table("service_events") as batch:
        batch.drop_column("details")
