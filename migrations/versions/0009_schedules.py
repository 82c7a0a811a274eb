"""schedules and the ticks they fired

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 14:00:00

``schedules`` holds each pack's schedules and the tick a beat fires next; ``schedule_fires``
one row per tick fired, keyed by (schedule, fire time): a beat inserts it ``ON CONFLICT DO
NOTHING`` and acts only on a row it inserted, so each tick fires once however many beats
run.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column(name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False)
        for name in ("created_at", "updated_at")
    ]


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pack_id", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=401), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("cron", sa.String(length=200), nullable=True),
        sa.Column("every_s", sa.Float(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False),
        sa.Column("action_ref", sa.String(length=401), nullable=True),
        sa.Column("trigger", sa.String(length=200), nullable=True),
        sa.Column(
            "parameters",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("missed", sa.String(length=20), server_default="skip", nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_fire_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_fire_at", sa.DateTime(timezone=True), nullable=True),
        *_timestamps(),
        sa.CheckConstraint(
            "num_nonnulls(cron, every_s, at) = 1", name=op.f("ck_schedules_one_timing")
        ),
        sa.CheckConstraint(
            "num_nonnulls(action_ref, trigger) = 1", name=op.f("ck_schedules_one_target")
        ),
        sa.CheckConstraint("missed IN ('skip', 'run_once')", name=op.f("ck_schedules_missed")),
        sa.ForeignKeyConstraint(
            ["pack_id"], ["packs.id"], name=op.f("fk_schedules_pack_id_packs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sa.UniqueConstraint("ref", name=op.f("uq_schedules_ref")),
    )
    op.create_index(op.f("ix_schedules_pack_id"), "schedules", ["pack_id"], unique=False)
    op.create_index(
        "ix_schedules_due",
        "schedules",
        ["next_fire_at"],
        unique=False,
        postgresql_where=sa.text("enabled AND paused_at IS NULL"),
    )
    op.create_table(
        "schedule_fires",
        sa.Column("schedule_id", sa.Integer(), nullable=False),
        sa.Column("fire_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "fired_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedules.id"],
            name=op.f("fk_schedule_fires_schedule_id_schedules"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["events.id"],
            name=op.f("fk_schedule_fires_event_id_events"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("schedule_id", "fire_at", name=op.f("pk_schedule_fires")),
    )
    op.create_index(
        op.f("ix_schedule_fires_event_id"), "schedule_fires", ["event_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_schedule_fires_event_id"), table_name="schedule_fires")
    op.drop_table("schedule_fires")
    op.drop_index("ix_schedules_due", table_name="schedules")
    op.drop_index(op.f("ix_schedules_pack_id"), table_name="schedules")
    op.drop_table("schedules")
