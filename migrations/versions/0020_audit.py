"""Who did what: an execution's requester and canceller, and the audit of every mutation

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03 10:00:00

``requested_by`` is ``rule:<ref>``, ``schedule:<ref>``, a token's name or ``cli:<user>``;
``cancelled_by`` who cancelled it. ``audit`` holds one row per mutating request (API,
dashboard, webhooks) and CLI command, refused ones too, read newest first by id (the
primary key's index pages it). ``detail`` is bounded: never a request's body.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("executions", sa.Column("requested_by", sa.Text(), nullable=True))
    op.add_column("executions", sa.Column("cancelled_by", sa.Text(), nullable=True))
    op.create_table(
        "audit",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column(
            "at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("verb", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.CheckConstraint(
            "detail IS NULL OR octet_length(CAST(detail AS text)) <= 4096",
            name=op.f("ck_audit_detail_size"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit")),
    )


def downgrade() -> None:
    op.drop_table("audit")
    op.drop_column("executions", "cancelled_by")
    op.drop_column("executions", "requested_by")
