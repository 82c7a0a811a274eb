"""levels above the line: an action's total_concurrency across partitions, and pools

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01 16:10:00

``levels`` holds each total and each pool with its limit and how many executions hold one
of its slots; ``action_levels`` which levels an action takes. Actions that share a level
form a level group (``actions.level_group``, copied on their lines), whose admissions take
one advisory lock (docs/architecture.md, "Levels: totals and pools"). An execution records
the levels it holds (``executions.levels``). Functions: app/sql/functions.sql, version 10.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from app import sql

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "levels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("ref", sa.String(length=401), nullable=False),
        sa.Column("pack_id", sa.Integer(), nullable=False),
        sa.Column("max", sa.Integer(), nullable=False),
        sa.Column("live_max", sa.Integer(), nullable=True),
        sa.Column("active", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "last_updated", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("kind IN ('total', 'pool')", name=op.f("ck_levels_kind")),
        sa.ForeignKeyConstraint(
            ["pack_id"], ["packs.id"], name=op.f("fk_levels_pack_id_packs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_levels")),
        sa.UniqueConstraint("kind", "ref", name=op.f("uq_levels_kind")),
    )
    op.create_table(
        "action_levels",
        sa.Column("action_id", sa.Integer(), nullable=False),
        sa.Column("level_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["action_id"],
            ["actions.id"],
            name=op.f("fk_action_levels_action_id_actions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["level_id"],
            ["levels.id"],
            name=op.f("fk_action_levels_level_id_levels"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("action_id", "level_id", name=op.f("pk_action_levels")),
    )
    op.create_index(op.f("ix_action_levels_level_id"), "action_levels", ["level_id"], unique=False)
    op.add_column("actions", sa.Column("level_group", sa.Integer(), nullable=True))
    op.add_column("queues", sa.Column("level_group", sa.Integer(), nullable=True))
    op.add_column("queues", sa.Column("last_granted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "executions",
        sa.Column(
            "levels",
            postgresql.ARRAY(sa.Integer()),
            server_default=sa.text("'{}'::integer[]"),
            nullable=False,
        ),
    )
    op.execute(sql.functions())


def downgrade() -> None:
    op.drop_column("executions", "levels")
    op.drop_column("queues", "last_granted_at")
    op.drop_column("queues", "level_group")
    op.drop_column("actions", "level_group")
    op.drop_index(op.f("ix_action_levels_level_id"), table_name="action_levels")
    op.drop_table("action_levels")
    op.drop_table("levels")
