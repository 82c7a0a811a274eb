"""delayed runs: an execution that joins its line at run_at

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 16:00:00

A delayed execution (``run_at`` or ``delay_s`` on a request) waits as ``delayed`` with no
``seq``: it holds no place in line until it falls due, when beat (or the sweeper) gives it
the next seq of its line. ``seq`` may so be NULL; the unique (queue_id, seq) still holds for
every execution that joined. The partial index holds only the delayed rows, in the order
they join: (run_at, id).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("executions", sa.Column("run_at", sa.DateTime(timezone=True), nullable=True))
    op.alter_column("executions", "seq", existing_type=sa.BigInteger(), nullable=True)
    op.create_index(
        "ix_executions_delayed",
        "executions",
        ["run_at", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'delayed'"),
    )


def downgrade() -> None:
    # A delayed execution has no seq: it cannot stay once seq is required again.
    op.execute("DELETE FROM executions WHERE seq IS NULL")
    op.drop_index("ix_executions_delayed", table_name="executions")
    op.alter_column("executions", "seq", existing_type=sa.BigInteger(), nullable=False)
    op.drop_column("executions", "run_at")
