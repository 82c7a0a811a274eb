"""what a live change set, apart from the pack's files

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 14:20:00

``PATCH /api/v1/actions/<ref>/policy`` and ``usher actions set`` merge their keys into the
action's policy until the next pack load. ``live_policy`` keeps those keys too, so the
dashboard and the API can say which limits are a live override; a pack load clears it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "actions",
        sa.Column(
            "live_policy",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("actions", "live_policy")
