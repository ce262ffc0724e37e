"""First pickup and SLA breach times, pending-assessment index

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 21:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("handoffs") as batch:
        batch.add_column(sa.Column("first_picked_up_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("sla_breached_at", sa.DateTime(timezone=True)))
        batch.create_index("ix_handoffs_assessment", ["assessment_status"])
    # Existing rows: the current pickup is the best record of the first one.
    op.execute("UPDATE handoffs SET first_picked_up_at = picked_up_at")


def downgrade() -> None:
    with op.batch_alter_table("handoffs") as batch:
        batch.drop_index("ix_handoffs_assessment")
        batch.drop_column("sla_breached_at")
        batch.drop_column("first_picked_up_at")
