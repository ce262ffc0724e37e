"""The counter row records when its account's log last moved (database clock, ms), so
the log check asks "which accounts moved lately?" instead of comparing every online
account's position

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 04:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows written before this revision read as "moved at the epoch": the log check's full
    # comparison (at start and then every RF_LOG_FULL_CHECK_SECONDS) covers them.
    with op.batch_alter_table("account_sequences") as batch:
        batch.add_column(
            sa.Column("moved_at_ms", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.create_index("ix_account_sequences_moved", "account_sequences", ["moved_at_ms"])


def downgrade() -> None:
    op.drop_index("ix_account_sequences_moved", "account_sequences")
    with op.batch_alter_table("account_sequences") as batch:
        batch.drop_column("moved_at_ms")
