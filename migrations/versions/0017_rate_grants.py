"""a rate limiter whose cost does not grow with its count: numbered grants

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 16:00:00

Every grant of a rate-limited line is numbered on its line's row (``rate_grants_total``,
taken under the line's lock) and recorded as ``rate_grants (queue_id, n, granted_at)``; a
window is checked with two index probes, whatever its count (``policies/ratelimit.py``).
Rows at or below ``rate_grants_pruned`` are gone. ``rate_recorded_from`` says since when
the line's record is complete: NULL for the lines that exist now, so each of them fills its
record once from its history (``attempts`` and ``executions``, as the limiter read before)
the first time it grants under a rate limit; a line made from now on starts complete.
``actions.rate_limited_since`` is when the action last became rate-limited: a record that
started before it missed the grants made without a limit, and is filled again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_grants",
        sa.Column("queue_id", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["queue_id"], ["queues.id"], name="fk_rate_grants_queue_id_queues", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("queue_id", "n", name="pk_rate_grants"),
    )
    op.create_index(
        "ix_rate_grants_queue_id_granted_at", "rate_grants", ["queue_id", "granted_at", "n"]
    )
    op.add_column(
        "queues",
        sa.Column("rate_grants_total", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.add_column(
        "queues",
        sa.Column("rate_grants_pruned", sa.BigInteger(), server_default="0", nullable=False),
    )
    # NULL on the lines that exist (their record is filled from history), now() for new ones.
    op.add_column("queues", sa.Column("rate_recorded_from", sa.DateTime(timezone=True)))
    op.alter_column("queues", "rate_recorded_from", server_default=sa.text("now()"))
    op.add_column("actions", sa.Column("rate_limited_since", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("actions", "rate_limited_since")
    op.drop_column("queues", "rate_recorded_from")
    op.drop_column("queues", "rate_grants_pruned")
    op.drop_column("queues", "rate_grants_total")
    op.drop_index("ix_rate_grants_queue_id_granted_at", table_name="rate_grants")
    op.drop_table("rate_grants")
