"""Collaboration: known users, event details, the per-handoff history archive, presence

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 22:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "account_users",
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "user_id", name="pk_account_users"),
    )
    with op.batch_alter_table("events") as batch:
        # Who did it, the transfer note or reopen reason, the comment: NULL for older kinds.
        batch.add_column(sa.Column("detail", sa.JSON(), nullable=True))
    op.create_index("ix_events_handoff", "events", ["handoff_id", "sequence"])
    op.create_table(
        "handoff_history",
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("handoff_id", sa.String(36), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("account_id", "sequence", name="pk_handoff_history"),
    )
    op.create_index("ix_handoff_history_handoff", "handoff_history", ["handoff_id", "sequence"])
    op.create_table(
        "presence",
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("replica_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "user_id", "replica_id", name="pk_presence"),
    )

    # "What fixed it last time": resolved escalations, searchable with the database's own
    # full-text search (no extra service).
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE resolved_search USING fts5("
            "handoff_id UNINDEXED, account_id UNINDEXED, body)"
        )
    else:
        op.execute(
            "CREATE TABLE resolved_search ("
            "handoff_id VARCHAR(36) PRIMARY KEY, account_id VARCHAR(128) NOT NULL, "
            "body TEXT NOT NULL, "
            "tsv TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', body)) STORED)"
        )
        op.execute("CREATE INDEX ix_resolved_search_tsv ON resolved_search USING gin (tsv)")


def downgrade() -> None:
    op.execute("DROP TABLE resolved_search")
    op.drop_table("presence")
    op.drop_index("ix_handoff_history_handoff", table_name="handoff_history")
    op.drop_table("handoff_history")
    op.drop_index("ix_events_handoff", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("detail")
    op.drop_table("account_users")
