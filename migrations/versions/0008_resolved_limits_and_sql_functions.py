"""resolved limits on the action; the PL/pgSQL from app/sql/functions.sql

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 12:40:00

``usher_finish`` read the action's and the pack's policies and applied the precedence rule
again in PL/pgSQL. Now ``policies.limits.store`` writes the result (the concurrency limit,
NULL for the settings' default, and whether a rate limit applies) on the action, wherever a
policy is written (pack load, a live change); ``usher_finish`` reads those two columns.
From here on the functions live in ``app/sql/functions.sql``, loaded below.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app import sql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Once, for the actions that exist now; from here on policies.limits.store writes these.
BACKFILL = """
UPDATE actions a SET
    resolved_concurrency = coalesce(trunc((a.policy ->> 'concurrency')::numeric)::integer,
                                    trunc((p.policy ->> 'concurrency')::numeric)::integer),
    resolved_rate_limited = coalesce(a.policy -> 'rate_limit', 'null') <> 'null'
                            OR coalesce(p.policy -> 'rate_limit', 'null') <> 'null'
FROM packs p WHERE p.id = a.pack_id
"""


def upgrade() -> None:
    op.add_column("actions", sa.Column("resolved_concurrency", sa.Integer(), nullable=True))
    op.add_column(
        "actions",
        sa.Column("resolved_rate_limited", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.execute(BACKFILL)
    op.execute(sql.functions())


def downgrade() -> None:
    for function in ("usher_oldest_queued(integer)", "usher_capped_text(text)"):
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    op.execute("DROP FUNCTION IF EXISTS usher_capped_json(jsonb)")
    # 0006's usher_finish read the policies itself; take it back before the columns go.
    from importlib import import_module

    previous = import_module("migrations.versions.0006_hot_path_functions")
    op.execute(previous.FINISH)
    op.drop_column("actions", "resolved_rate_limited")
    op.drop_column("actions", "resolved_concurrency")
