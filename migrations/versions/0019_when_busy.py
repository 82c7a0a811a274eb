"""when_busy and coalesce: a hash of a coalescing action's parameters on its executions

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02 10:00:00

A request to an action with ``coalesce: true`` whose parameters equal a waiting one's
returns that one (policies.busy). ``params_hash`` is set only on the executions of such
actions (NULL for every other), so the partial index holds only their waiting rows and
costs the other actions nothing: the look-up under the line's lock is one index probe,
then the parameters themselves are compared.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("executions", sa.Column("params_hash", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_executions_waiting_params",
        "executions",
        ["queue_id", "params_hash"],
        unique=False,
        postgresql_where=sa.text("status = 'queued' AND params_hash IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_executions_waiting_params", table_name="executions")
    op.drop_column("executions", "params_hash")
