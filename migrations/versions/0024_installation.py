"""One installation per broker namespace: the installation's id, made once

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-06 12:00:00

Every queue of an installation carries this id (``usher.<id>.action.<ref>``,
``usher.<id>.events``, ``usher.<id>.default``) and every message its header: two
installations sharing a broker vhost never take each other's messages (``app.celery``). One
row, made here, never changed: a database restored elsewhere keeps its queues. An upgrade
from the queues without an id: docs/operations.md, "Upgrading to installation queues".
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "installation",
        sa.Column("one", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "id",
            sa.Text(),
            # 12 hex digits of a random UUID: unique among the installations of one vhost.
            server_default=sa.text("left(replace(CAST(gen_random_uuid() AS text), '-', ''), 12)"),
            nullable=False,
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("one", name=op.f("ck_installation_one")),
        sa.CheckConstraint("id ~ '^[0-9a-f]{12}$'", name=op.f("ck_installation_id_hex")),
        sa.PrimaryKeyConstraint("one", name=op.f("pk_installation")),
    )
    op.execute("INSERT INTO installation DEFAULT VALUES")


def downgrade() -> None:
    op.drop_table("installation")
