"""Account events: a log entry about no handoff (a webhook endpoint marked failing) has
no handoff id and no handoff state

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 01:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("events", "handoff_history")


def upgrade() -> None:
    for table in TABLES:
        # SQLite cannot change a column's nullability in place: batch mode copies the table
        # (PostgreSQL alters it in place).
        with op.batch_alter_table(table) as batch:
            batch.alter_column("handoff_id", existing_type=sa.String(36), nullable=True)
            batch.alter_column("payload", existing_type=sa.JSON(), nullable=True)


def downgrade() -> None:
    for table in TABLES:
        op.execute(sa.text(f"DELETE FROM {table} WHERE handoff_id IS NULL"))
        with op.batch_alter_table(table) as batch:
            batch.alter_column("handoff_id", existing_type=sa.String(36), nullable=False)
            batch.alter_column("payload", existing_type=sa.JSON(), nullable=False)
