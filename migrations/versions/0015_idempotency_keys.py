"""idempotency keys of POST /executions and /events

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 16:00:00

One row per (scope, key): ``execution:<action ref>`` or ``event:<trigger>``, and the
request's ``Idempotency-Key`` (or a batch item's ``key``). The primary key is what makes
two racing requests one; ``fingerprint`` tells the same request from a different one, and
``response`` is the first one's answer. The sweeper deletes the keys older than
USHER_IDEMPOTENCY_TTL_S through the created_at index.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(length=420), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("response", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(
        "ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
