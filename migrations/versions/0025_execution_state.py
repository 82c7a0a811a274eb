"""An execution's state in a narrow table of its own; ``executions`` becomes a view

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07 12:00:00

Every status change used to rewrite the whole ``executions`` row and add an entry to each of
its 15 indexes (a non-HOT update), the GIN index of the parameters among them. The row is
split in two:

- ``execution_requests``: what was asked, written once (action, parameters, requester,
  times of asking, re-run and replay links, its line and place with their uniqueness),
  with the listing indexes;
- ``execution_state``: what changes (status, attempt, lease, worker, times, result), with the
  line's indexes only (waiting, active, retrying, delayed, dead, status).

``executions`` is a view of the two joined on id, for every read; the writers write the
tables. The foreign keys of attempts, output and enforcements follow the rename to
``execution_requests``. A lease renewal changes no indexed column and finds room on its
page (fillfactor 85): a HOT update. The copy rewrites the table once, under its lock
(docs/operations.md, "Upgrading to the narrow state table", has its time per million).
"""

from __future__ import annotations

from alembic import op

from app import sql

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

FINAL = "('succeeded', 'failed', 'timed_out', 'dead', 'cancelled', 'expired', 'rejected')"

# The state's columns and their types: the new table's, and the downgrade's (the ones it
# moved back, KEPT aside).
COLUMNS = {
    "queue_id": "integer NOT NULL",
    "seq": "bigint",
    "priority": "integer DEFAULT 0 NOT NULL",
    "status": "varchar(20) NOT NULL",
    "attempt": "integer DEFAULT 1 NOT NULL",
    "queued_at": "timestamptz",
    "not_before": "timestamptz",
    "holds_slot": "boolean DEFAULT false NOT NULL",
    "scheduled_at": "timestamptz",
    "published_at": "timestamptz",
    "started_at": "timestamptz",
    "finished_at": "timestamptz",
    "lease_expires_at": "timestamptz",
    "worker": "varchar(300)",
    "result": "jsonb",
    "error": "text",
    "levels": "integer[] DEFAULT '{}'::integer[] NOT NULL",
    "dlq_cleared_at": "timestamptz",
    "run_at": "timestamptz",
    "params_hash": "bigint",
    "cancelled_by": "text",
}
STATE = ", ".join(COLUMNS)

VIEW = """
    CREATE VIEW executions AS
    SELECT r.id, r.action_id, s.queue_id, s.seq, s.priority, s.status, r.parameters,
           s.attempt, r.enqueued_at, s.scheduled_at, s.published_at, s.started_at,
           s.finished_at, s.lease_expires_at, s.worker, s.result, s.error, s.queued_at,
           s.not_before, s.holds_slot, r.replay_of, s.dlq_cleared_at, s.run_at, s.levels,
           s.params_hash, r.requested_by, s.cancelled_by, r.rerun_of
    FROM execution_requests r JOIN execution_state s ON s.id = r.id
"""

INDEXES = (
    "CREATE INDEX ix_execution_state_waiting ON execution_state "
    "(queue_id, priority DESC, seq) WHERE status = 'queued'",
    # Keyed on the id alone: a renewal, which changes the lease only, is then a HOT update
    # (no index entry at all), and a claim or finish, whose conditions imply this index's,
    # probes it by id as it would the primary key. The active rows are at most the limits'
    # sum: the sweeper's look for expired leases reads them all and sorts.
    "CREATE INDEX ix_execution_state_active ON execution_state (id DESC) "
    "WHERE status IN ('scheduled', 'running')",
    # Every other status, newest first (the list's status filter, retention): a grant and a
    # claim, which move between queued, scheduled and running, write the active index only.
    "CREATE INDEX ix_execution_state_status_id ON execution_state (status, id DESC) "
    "WHERE status NOT IN ('scheduled', 'running')",
    "CREATE INDEX ix_execution_state_retrying ON execution_state (not_before) "
    "WHERE status = 'retrying'",
    "CREATE INDEX ix_execution_state_dlq ON execution_state (id DESC) "
    "WHERE status = 'dead' AND dlq_cleared_at IS NULL",
    "CREATE INDEX ix_execution_state_delayed ON execution_state (run_at, id) "
    "WHERE status = 'delayed'",
    "CREATE INDEX ix_execution_state_waiting_params ON execution_state (queue_id, params_hash) "
    "WHERE status = 'queued' AND params_hash IS NOT NULL",
)

KEPT = ("queue_id", "seq")

RENAMED_INDEXES = ("action_id_id", "parameters", "requested_by_id", "enqueued_at", "replay_of")
RENAMED_INDEXES += ("rerun_of",)

# (table, old name, new name) of the constraints named after the table.
RENAMED_CONSTRAINTS = (
    ("execution_requests", "pk_executions", "pk_execution_requests"),
    (
        "execution_requests",
        "fk_executions_action_id_actions",
        "fk_execution_requests_action_id_actions",
    ),
    (
        "execution_requests",
        "fk_executions_queue_id_queues",
        "fk_execution_requests_queue_id_queues",
    ),
    ("execution_requests", "uq_executions_queue_id", "uq_execution_requests_queue_id"),
    (
        "execution_requests",
        "fk_executions_replay_of_executions",
        "fk_execution_requests_replay_of_execution_requests",
    ),
    (
        "execution_requests",
        "fk_executions_rerun_of_executions",
        "fk_execution_requests_rerun_of_execution_requests",
    ),
    (
        "attempts",
        "fk_attempts_execution_id_executions",
        "fk_attempts_execution_id_execution_requests",
    ),
    (
        "enforcements",
        "fk_enforcements_execution_id_executions",
        "fk_enforcements_execution_id_execution_requests",
    ),
    (
        "execution_output",
        "fk_execution_output_execution_id_executions",
        "fk_execution_output_execution_id_execution_requests",
    ),
)


def _emit_trigger(table: str, enabled: bool) -> None:
    """The execution events' trigger (migration 0013) on ``table``, enabled as it was."""
    op.execute(f"""
        CREATE TRIGGER executions_emit AFTER UPDATE OF status ON {table}
        FOR EACH ROW WHEN (NEW.status IN {FINAL} AND OLD.status IS DISTINCT FROM NEW.status)
        EXECUTE FUNCTION usher_execution_event()
    """)
    if not enabled:
        op.execute(f"ALTER TABLE {table} DISABLE TRIGGER executions_emit")


def upgrade() -> None:
    bind = op.get_bind()
    emitting = bind.exec_driver_sql(
        "SELECT tgenabled <> 'D' FROM pg_trigger "
        "WHERE tgrelid = 'executions'::regclass AND tgname = 'executions_emit'"
    ).scalar()
    op.execute("DROP TRIGGER executions_emit ON executions")
    op.execute("ALTER TABLE executions RENAME TO execution_requests")
    op.execute("ALTER SEQUENCE executions_id_seq RENAME TO execution_requests_id_seq")
    for table, old, new in RENAMED_CONSTRAINTS:
        op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {old} TO {new}")
    for name in RENAMED_INDEXES:
        op.execute(f"ALTER INDEX ix_executions_{name} RENAME TO ix_execution_requests_{name}")
    op.execute(f"""
        CREATE TABLE execution_state (
            id bigint NOT NULL,
            {", ".join(f"{c} {t}" for c, t in COLUMNS.items())},
            CONSTRAINT pk_execution_state PRIMARY KEY (id),
            CONSTRAINT fk_execution_state_id_execution_requests FOREIGN KEY (id)
                REFERENCES execution_requests (id) ON DELETE CASCADE,
            CONSTRAINT fk_execution_state_queue_id_queues FOREIGN KEY (queue_id)
                REFERENCES queues (id) ON DELETE CASCADE
        ) WITH (fillfactor = 85)
    """)
    op.execute(
        f"INSERT INTO execution_state (id, {STATE}) SELECT id, {STATE} FROM execution_requests"
    )
    # The line and place stay on the request too, with their uniqueness: checked once, when
    # the execution joins its line, not at every change of its state.
    for column in STATE.split(", "):
        if column not in KEPT:
            op.execute(f"ALTER TABLE execution_requests DROP COLUMN {column}")
    for statement in INDEXES:
        op.execute(statement)
    op.execute(VIEW)
    op.execute(sql.functions())
    _emit_trigger("execution_state", emitting)
    # Statistics for the planner when there was history to copy (an empty table is left
    # unanalyzed, as a new table is, until autovacuum sees it grow).
    if bind.exec_driver_sql("SELECT EXISTS (SELECT 1 FROM execution_state)").scalar():
        op.execute("ANALYZE execution_requests")
        op.execute("ANALYZE execution_state")


def downgrade() -> None:
    # The PL/pgSQL loaded at the end is this release's (functions.sql is the one copy): after
    # a downgrade, load the older release's app/sql/functions.sql with psql -f before its
    # workers start.
    bind = op.get_bind()
    emitting = bind.exec_driver_sql(
        "SELECT tgenabled <> 'D' FROM pg_trigger "
        "WHERE tgrelid = 'execution_state'::regclass AND tgname = 'executions_emit'"
    ).scalar()
    op.execute("DROP VIEW executions")
    op.execute("DROP TRIGGER executions_emit ON execution_state")
    op.execute("ALTER TABLE execution_requests RENAME TO executions")
    op.execute("ALTER SEQUENCE execution_requests_id_seq RENAME TO executions_id_seq")
    for table, old, new in RENAMED_CONSTRAINTS:
        table = table.replace("execution_requests", "executions")
        op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {new} TO {old}")
    for name in RENAMED_INDEXES:
        op.execute(f"ALTER INDEX ix_execution_requests_{name} RENAME TO ix_executions_{name}")
    # Added without NOT NULL where there is no default (the table has rows); status is set
    # NOT NULL once copied back.
    columns = {
        c: t if "DEFAULT" in t else t.replace(" NOT NULL", "")
        for c, t in COLUMNS.items()
        if c not in KEPT
    }
    for column, kind in columns.items():
        op.execute(f"ALTER TABLE executions ADD COLUMN {column} {kind}")
    assignments = ", ".join(f"{c} = s.{c}" for c in columns)
    op.execute(f"UPDATE executions e SET {assignments} FROM execution_state s WHERE s.id = e.id")
    op.execute("DROP TABLE execution_state")
    op.execute("ALTER TABLE executions ALTER COLUMN status SET NOT NULL")
    for statement in INDEXES:
        op.execute(
            statement.replace("ix_execution_state_", "ix_executions_")
            .replace("ON execution_state", "ON executions")
            .replace("(id DESC) WHERE status IN", "(status, lease_expires_at) WHERE status IN")
            .replace(" WHERE status NOT IN ('scheduled', 'running')", "")
        )
    op.execute(sql.functions())
    _emit_trigger("executions", emitting)
