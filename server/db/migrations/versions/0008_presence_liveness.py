"""Presence kept alive by one row per server instead of one refresh per watching engineer

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 01:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "presence_replicas",
        sa.Column("replica_id", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("replica_id", name="pk_presence_replicas"),
    )
    # Presence is a fact about now: rows written under the old scheme have no liveness row
    # and would never count again, so they go.
    op.execute("DELETE FROM presence")
    with op.batch_alter_table("presence") as batch:
        batch.drop_column("expires_at")
    op.create_index("ix_presence_replica", "presence", ["replica_id"])


def downgrade() -> None:
    op.drop_index("ix_presence_replica", "presence")
    op.execute("DELETE FROM presence")
    with op.batch_alter_table("presence") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False))
    op.drop_table("presence_replicas")
