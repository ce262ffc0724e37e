"""Assessment claims: who holds a pending assessment, until when, and how often claimed

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("handoffs") as batch:
        batch.add_column(
            sa.Column("assessment_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        # NULL: nobody holds it; pending rows from before this revision are free to claim.
        batch.add_column(sa.Column("assessment_lease_until", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("assessment_claimed_by", sa.String(256)))


def downgrade() -> None:
    with op.batch_alter_table("handoffs") as batch:
        batch.drop_column("assessment_claimed_by")
        batch.drop_column("assessment_lease_until")
        batch.drop_column("assessment_attempts")
