"""a trigger's events, newest first, by index

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 16:30:00

``GET /api/v1/events?trigger=`` and ``usher events list --trigger`` read a page of one
trigger's events newest first: (trigger, id) walked backwards from the cursor reads that
page's rows only, where the primary key would pass every other trigger's events. A plain
CREATE INDEX, not CONCURRENTLY: the migrations run in one transaction under the advisory
lock that lets one of several starting processes migrate.
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_trigger_id", "events", ["trigger", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_events_trigger_id", table_name="events")
