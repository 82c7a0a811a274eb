"""the webhooks of packs and their deliveries

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 16:00:00

``webhooks`` holds each pack's webhooks (the name of the secret, never its value);
``webhook_deliveries`` one row per delivery id a webhook took, keyed by (webhook, delivery
id): a request inserts it ``ON CONFLICT DO NOTHING`` and stores an event only for a row it
inserted, so a delivery sent twice makes one event. ``webhook_requests`` counts the requests
by outcome for ``/metrics``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column(name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False)
        for name in ("created_at", "updated_at")
    ]


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pack_id", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=401), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("trigger", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("secret_name", sa.String(length=128), nullable=False),
        sa.Column("header", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=100), server_default="", nullable=False),
        sa.Column("delivery_header", sa.String(length=100), nullable=False),
        *_timestamps(),
        sa.CheckConstraint("kind IN ('hmac_sha256', 'token')", name=op.f("ck_webhooks_kind")),
        sa.ForeignKeyConstraint(
            ["pack_id"], ["packs.id"], name=op.f("fk_webhooks_pack_id_packs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
        sa.UniqueConstraint("ref", name=op.f("uq_webhooks_ref")),
    )
    op.create_index(op.f("ix_webhooks_pack_id"), "webhooks", ["pack_id"], unique=False)
    op.create_table(
        "webhook_deliveries",
        sa.Column("webhook_id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.String(length=200), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["webhooks.id"],
            name=op.f("fk_webhook_deliveries_webhook_id_webhooks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["events.id"],
            name=op.f("fk_webhook_deliveries_event_id_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("webhook_id", "delivery_id", name=op.f("pk_webhook_deliveries")),
    )
    # The sweeper's pruning of events finds their deliveries by it.
    op.create_index(
        op.f("ix_webhook_deliveries_event_id"), "webhook_deliveries", ["event_id"], unique=False
    )
    op.create_table(
        "webhook_requests",
        sa.Column("webhook", sa.String(length=401), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("webhook", "outcome", name=op.f("pk_webhook_requests")),
    )


def downgrade() -> None:
    op.drop_table("webhook_requests")
    op.drop_index(op.f("ix_webhook_deliveries_event_id"), table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index(op.f("ix_webhooks_pack_id"), table_name="webhooks")
    op.drop_table("webhooks")
