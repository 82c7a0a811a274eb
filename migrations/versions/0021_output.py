"""Live output: an attempt's stdout and stderr, appended in pieces while it runs

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-04 10:00:00

One row per piece (``seq`` counts per stream), written by the worker about once a second
(``tasks.output``), read whole by ``GET /api/v1/executions/<id>/output``. The rows go with
their execution (ON DELETE CASCADE), so retention removes them too.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "execution_output",
        sa.Column("execution_id", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("stream", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("chunk", sa.Text(), nullable=False),
        sa.Column(
            "at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "stream IN ('stdout', 'stderr')", name=op.f("ck_execution_output_stream")
        ),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["executions.id"],
            name=op.f("fk_execution_output_execution_id_executions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "execution_id", "attempt", "stream", "seq", name=op.f("pk_execution_output")
        ),
    )


def downgrade() -> None:
    op.drop_table("execution_output")
