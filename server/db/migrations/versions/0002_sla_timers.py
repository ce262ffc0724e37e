"""SLA timers

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 21:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sla_timers",
        sa.Column("handoff_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("handoff_id", "kind", name=op.f("pk_sla_timers")),
    )
    op.create_index("ix_sla_timers_due", "sla_timers", ["fired_at", "due_at"], unique=False)
    op.create_index("ix_events_occurred", "events", ["occurred_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_events_occurred", table_name="events")
    op.drop_index("ix_sla_timers_due", table_name="sla_timers")
    op.drop_table("sla_timers")
