"""hardening: events that fail for good, server-side dashboard sessions

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 09:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # An event whose processing keeps failing ends ``failed`` (kept, replayable) instead of
    # being published again for ever; ``failures`` counts the tries that did not finish.
    op.add_column("events", sa.Column("failures", sa.Integer(), server_default="0", nullable=False))
    op.add_column("events", sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("events", sa.Column("error", sa.Text(), nullable=True))
    op.create_index(
        "ix_events_unprocessed",
        "events",
        ["id"],
        postgresql_where=sa.text("processed_at IS NULL AND failed_at IS NULL"),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.BigInteger(), nullable=False),
        # SHA-256 of the nonce the cookie carries: the table alone opens no session.
        sa.Column("nonce_hash", sa.String(64), nullable=False),
        sa.Column("token_name", sa.String(200), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
        sa.UniqueConstraint("nonce_hash", name=op.f("uq_web_sessions_nonce_hash")),
    )


def downgrade() -> None:
    op.drop_table("web_sessions")
    op.drop_index("ix_events_unprocessed", table_name="events")
    op.drop_column("events", "error")
    op.drop_column("events", "failed_at")
    op.drop_column("events", "failures")
