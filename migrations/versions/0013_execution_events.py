"""execution events: the chain depth of events and the trigger that emits them

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 16:00:00

A final status of an execution emits an ``usher.execution`` event in the same transaction
(app/sql/functions.sql, version 9: ``usher_execution_event``). ``events.depth`` counts the
steps of a chain: 0 for an event from outside, one more than the causing execution's event
for an execution event; past USHER_MAX_CHAIN_DEPTH its enforcements are rejected.

The row trigger on executions is enabled only while an enabled rule listens on
``usher.execution``; a statement trigger on rules keeps it so after every write of rules.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app import sql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

FINAL = "('succeeded', 'failed', 'timed_out', 'dead', 'cancelled', 'expired', 'rejected')"


def upgrade() -> None:
    op.add_column(
        "events", sa.Column("depth", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.execute(sql.functions())
    op.execute(f"""
        CREATE TRIGGER executions_emit AFTER UPDATE OF status ON executions
        FOR EACH ROW WHEN (NEW.status IN {FINAL} AND OLD.status IS DISTINCT FROM NEW.status)
        EXECUTE FUNCTION usher_execution_event()
    """)
    op.execute("ALTER TABLE executions DISABLE TRIGGER executions_emit")
    op.execute("""
        CREATE TRIGGER rules_emit_sync AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON rules
        FOR EACH STATEMENT EXECUTE FUNCTION usher_execution_events_sync()
    """)
    # Rules loaded before this migration may listen already.
    op.execute("UPDATE rules SET enabled = enabled WHERE false")


def downgrade() -> None:
    op.execute("DROP TRIGGER rules_emit_sync ON rules")
    op.execute("DROP TRIGGER executions_emit ON executions")
    for function in (
        "usher_execution_events_sync()",
        "usher_execution_events_enabled()",
        "usher_execution_event()",
    ):
        op.execute(f"DROP FUNCTION {function}")
    op.drop_column("events", "depth")
