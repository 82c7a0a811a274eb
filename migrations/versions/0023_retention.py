"""Retention: what it removed, counted (``history_pruned``), and the indexes its deletes use

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06 10:00:00

The sweeper removes finished history older than USHER_RETENTION_S in bounded batches
(``policies.retention``). Deleting an execution sets ``replay_of`` and ``rerun_of`` of the
executions that name it to NULL, a lookup by each: partial indexes make it one index probe
instead of a scan of the table. The counters of /metrics that count history rows add what
retention removed (``history_pruned``), so none of them goes down. The indexes are built
CONCURRENTLY: on a large table, writes go on while they are built.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "history_pruned",
        sa.Column("family", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("n", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("family", "label", "detail", name=op.f("pk_history_pruned")),
    )
    with op.get_context().autocommit_block():
        for column in ("replay_of", "rerun_of"):
            op.create_index(
                f"ix_executions_{column}",
                "executions",
                [column],
                postgresql_where=sa.text(f"{column} IS NOT NULL"),
                postgresql_concurrently=True,
                if_not_exists=True,
            )


def downgrade() -> None:
    op.drop_index("ix_executions_rerun_of", table_name="executions")
    op.drop_index("ix_executions_replay_of", table_name="executions")
    op.drop_table("history_pruned")
