"""Optional request_id, and the hash of the request body kept beside it

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows created before this have no hash: a repeat of their request_id is answered with
    # the stored handoff, as it was when they were created.
    with op.batch_alter_table("handoffs") as batch:
        batch.add_column(sa.Column("request_hash", sa.String(64)))
        batch.alter_column("request_id", existing_type=sa.String(128), nullable=True)


def downgrade() -> None:
    # Creates without a request_id get their own id as key, which is unique per creator.
    op.execute("UPDATE handoffs SET request_id = id WHERE request_id IS NULL")
    with op.batch_alter_table("handoffs") as batch:
        batch.alter_column("request_id", existing_type=sa.String(128), nullable=False)
        batch.drop_column("request_hash")
