"""the enforcement behind an execution, found by index

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 14:05:00

An execution's page shows what started it (a rule and its event, or a schedule and its
tick): the enforcement whose ``execution_id`` it is. Without an index that is a read of
every enforcement; deleting executions (ON DELETE SET NULL) needs it as well.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_enforcements_execution_id",
        "enforcements",
        ["execution_id"],
        unique=False,
        postgresql_where="execution_id IS NOT NULL",
    )


def downgrade() -> None:
    op.drop_index("ix_enforcements_execution_id", table_name="enforcements")
