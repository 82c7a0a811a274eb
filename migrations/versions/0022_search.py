"""Search and re-runs: an execution's ``rerun_of``, and the indexes the list's filters use

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05 10:00:00

``rerun_of`` links a re-run (``POST /api/v1/executions/<id>/rerun``) to the execution it
repeats, as ``replay_of`` links a DLQ replay. The list's filters each have an index the
newest-first page can walk or bitmap: ``parameters`` (GIN, jsonb_path_ops: ``@@`` and
``@>``), ``(requested_by, id DESC)`` of the rows that have one (``rule=`` is
``requested_by = 'rule:<ref>'``), and ``enqueued_at`` for ``since``/``until``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("executions", sa.Column("rerun_of", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_executions_rerun_of_executions"),
        "executions",
        "executions",
        ["rerun_of"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_index(
        "ix_executions_parameters",
        "executions",
        ["parameters"],
        postgresql_using="gin",
        postgresql_ops={"parameters": "jsonb_path_ops"},
    )
    op.create_index(
        "ix_executions_requested_by_id",
        "executions",
        ["requested_by", sa.text("id DESC")],
        postgresql_where=sa.text("requested_by IS NOT NULL"),
    )
    op.create_index("ix_executions_enqueued_at", "executions", ["enqueued_at"])


def downgrade() -> None:
    op.drop_index("ix_executions_enqueued_at", table_name="executions")
    op.drop_index("ix_executions_requested_by_id", table_name="executions")
    op.drop_index("ix_executions_parameters", table_name="executions")
    op.drop_constraint(op.f("fk_executions_rerun_of_executions"), "executions", type_="foreignkey")
    op.drop_column("executions", "rerun_of")
