"""handoffs, account sequences and the event log

Revision ID: 0001
Revises:
Create Date: 2026-11-25 20:48:45.864596
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "account_sequences",
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_account_sequences")),
    )
    op.create_table(
        "events",
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("handoff_id", sa.String(length=36), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "sequence", name=op.f("pk_events")),
    )
    op.create_table(
        "handoffs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=False),
        sa.Column("intent", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("priority_rank", sa.Integer(), nullable=False),
        sa.Column("problem_summary", sa.Text(), nullable=False),
        sa.Column("steps_tried", sa.JSON(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("created_by_id", sa.String(length=128), nullable=False),
        sa.Column("created_by_name", sa.String(length=256), nullable=False),
        sa.Column("picked_up_by_id", sa.String(length=128), nullable=True),
        sa.Column("picked_up_by_name", sa.String(length=256), nullable=True),
        sa.Column("resolution_note", sa.Text(), nullable=False),
        sa.Column("assessment_status", sa.String(length=16), nullable=False),
        sa.Column("assessment_summary", sa.Text(), nullable=False),
        sa.Column("assessment_first_step", sa.Text(), nullable=False),
        sa.Column("assessment_provider", sa.String(length=128), nullable=False),
        sa.Column("assessment_failure_reason", sa.Text(), nullable=False),
        sa.Column("assessment_completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sla_due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("picked_up_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_handoffs")),
        sa.UniqueConstraint(
            "account_id", "created_by_id", "request_id", name="uq_handoffs_request"
        ),
    )
    with op.batch_alter_table("handoffs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_handoffs_account_created", ["account_id", "created_at", "id"], unique=False
        )
        batch_op.create_index("ix_handoffs_queue", ["account_id", "intent", "status"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("handoffs", schema=None) as batch_op:
        batch_op.drop_index("ix_handoffs_queue")
        batch_op.drop_index("ix_handoffs_account_created")

    op.drop_table("handoffs")
    op.drop_table("events")
    op.drop_table("account_sequences")
