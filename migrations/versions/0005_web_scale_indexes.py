"""web scale: attempt totals per line for /metrics, the line on each attempt, covering indexes

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 08:30:00

/metrics read the whole attempt history at every scrape (seconds at a million attempts).
Now each line keeps its attempt totals (count, retries, duration and wait histograms) in
``attempt_totals``, maintained by a row trigger on ``attempts`` in the releasing transaction,
which already holds the line's lock; a scrape reads one row per line and outcome.

``attempts.queue_id`` (copied from the execution by a BEFORE INSERT trigger, so writers need
not know it) lets per-line time windows (the dashboard's pace) walk an index instead of
every execution of the line. It replaces ``ix_attempts_execution_id``, which the unique
(execution_id, attempt) key already covers, so an attempt insert writes no more indexes.

The histogram bounds below must equal ``web.metrics.DURATION_BUCKETS`` / ``WAIT_BUCKETS``
(a test checks); changing them takes a migration that replaces ``usher_attempt_totals_add``
and calls ``usher_attempt_totals_rebuild()``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

RUN_BOUNDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
WAIT_BOUNDS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600)


def _array(bounds: tuple[float, ...]) -> str:
    return "ARRAY[" + ", ".join(str(b) for b in bounds) + "]::numeric[]"


def _hist(column: str, slots: int) -> str:
    """Per-slot counts of a bucket number over a group, as one array literal expression."""
    return (
        "ARRAY["
        + ", ".join(f"count(*) FILTER (WHERE {column} = {i})" for i in range(1, slots + 1))
        + "]"
    )


# Histogram arrays hold one count per bucket (slot i: v <= bound i and above bound i-1),
# then the overflow slot (+Inf only), then a slot for attempts without the value (never
# started): cumulative Prometheus buckets are prefix sums, computed at scrape time.
FUNCTIONS = f"""
CREATE FUNCTION usher_bucket(v numeric, bounds numeric[]) RETURNS integer
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    i integer := 1;
    n integer := cardinality(bounds);
BEGIN
    IF v IS NULL THEN
        RETURN n + 2;
    END IF;
    WHILE i <= n AND v > bounds[i] LOOP
        i := i + 1;
    END LOOP;
    RETURN i;
END
$$;

-- Runs in the releasing transaction, under the line's lock: one UPDATE of the line's row for
-- the outcome (an INSERT only the first time).
CREATE FUNCTION usher_attempt_totals_add(a attempts, sign integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    run numeric := extract(epoch FROM a.finished_at - a.started_at);
    wait numeric := extract(epoch FROM a.started_at - a.queued_at);
    r integer := usher_bucket(run, {_array(RUN_BOUNDS)});
    w integer := usher_bucket(wait, {_array(WAIT_BOUNDS)});
BEGIN
    LOOP
        UPDATE attempt_totals SET
            attempts = attempts + sign,
            retries = retries + CASE WHEN a.attempt > 1 THEN sign ELSE 0 END,
            run_sum = run_sum + coalesce(run, 0) * sign,
            wait_sum = wait_sum + coalesce(wait, 0) * sign,
            run_hist[r] = run_hist[r] + sign,
            wait_hist[w] = wait_hist[w] + sign
        WHERE queue_id = a.queue_id AND outcome = a.outcome;
        EXIT WHEN FOUND;
        INSERT INTO attempt_totals (queue_id, outcome, run_hist, wait_hist)
        VALUES (a.queue_id, a.outcome, array_fill(0::bigint, ARRAY[{len(RUN_BOUNDS) + 2}]),
                array_fill(0::bigint, ARRAY[{len(WAIT_BOUNDS) + 2}]))
        ON CONFLICT (queue_id, outcome) DO NOTHING;
    END LOOP;
END
$$;

CREATE FUNCTION usher_attempt_line() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.queue_id IS NULL THEN
        SELECT queue_id INTO NEW.queue_id FROM executions WHERE id = NEW.execution_id;
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION usher_attempt_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM usher_attempt_totals_add(OLD, -1);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM usher_attempt_totals_add(NEW, 1);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION usher_attempt_totals_clear() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM attempt_totals;
    RETURN NULL;
END
$$;

CREATE FUNCTION usher_attempt_totals_rebuild() RETURNS void LANGUAGE sql AS $$
    DELETE FROM attempt_totals;
    INSERT INTO attempt_totals (queue_id, outcome, attempts, retries, run_sum, wait_sum,
                                run_hist, wait_hist)
    SELECT queue_id, outcome, count(*), count(*) FILTER (WHERE attempt > 1),
           coalesce(sum(run), 0), coalesce(sum(wait), 0),
           {_hist("r", len(RUN_BOUNDS) + 2)}, {_hist("w", len(WAIT_BOUNDS) + 2)}
    FROM (
        SELECT queue_id, outcome, attempt, run, wait,
               usher_bucket(run, {_array(RUN_BOUNDS)}) AS r,
               usher_bucket(wait, {_array(WAIT_BOUNDS)}) AS w
        FROM attempts CROSS JOIN LATERAL (
            SELECT extract(epoch FROM finished_at - started_at) AS run,
                   extract(epoch FROM started_at - queued_at) AS wait
        ) v
        OFFSET 0  -- bucket each row once, not once per FILTER below
    ) s
    GROUP BY queue_id, outcome;
$$;

CREATE TRIGGER attempts_line BEFORE INSERT ON attempts
    FOR EACH ROW EXECUTE FUNCTION usher_attempt_line();
CREATE TRIGGER attempts_count AFTER INSERT OR UPDATE OR DELETE ON attempts
    FOR EACH ROW EXECUTE FUNCTION usher_attempt_count();
CREATE TRIGGER attempts_truncate AFTER TRUNCATE ON attempts
    FOR EACH STATEMENT EXECUTE FUNCTION usher_attempt_totals_clear();
"""

DROP_FUNCTIONS = """
DROP TRIGGER attempts_truncate ON attempts;
DROP TRIGGER attempts_count ON attempts;
DROP TRIGGER attempts_line ON attempts;
DROP FUNCTION usher_attempt_totals_rebuild();
DROP FUNCTION usher_attempt_totals_clear();
DROP FUNCTION usher_attempt_count();
DROP FUNCTION usher_attempt_line();
DROP FUNCTION usher_attempt_totals_add(attempts, integer);
DROP FUNCTION usher_bucket(numeric, numeric[]);
"""


def upgrade() -> None:
    op.drop_index("ix_attempts_execution_id", table_name="attempts")  # one index less to update
    op.add_column("attempts", sa.Column("queue_id", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE attempts t SET queue_id = e.queue_id FROM executions e WHERE e.id = t.execution_id"
    )
    op.alter_column("attempts", "queue_id", nullable=False)
    op.create_index(
        "ix_attempts_queue_id_started_at", "attempts", ["queue_id", "started_at"], unique=False
    )
    op.create_table(
        "attempt_totals",
        sa.Column("queue_id", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("retries", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("run_sum", sa.Numeric(), server_default="0", nullable=False),
        sa.Column("wait_sum", sa.Numeric(), server_default="0", nullable=False),
        sa.Column("run_hist", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("wait_hist", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.ForeignKeyConstraint(
            ["queue_id"],
            ["queues.id"],
            name=op.f("fk_attempt_totals_queue_id_queues"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("queue_id", "outcome", name=op.f("pk_attempt_totals")),
    )
    op.execute(FUNCTIONS)
    op.execute("SELECT usher_attempt_totals_rebuild()")
    # The dashboard's sparklines and throughput read only these columns: index-only scans.
    op.drop_index("ix_queue_samples_action_id_sampled_at", table_name="queue_samples")
    op.create_index(
        "ix_queue_samples_action_id_sampled_at",
        "queue_samples",
        ["action_id", "sampled_at"],
        unique=False,
        postgresql_include=["queue_length", "completed"],
    )
    # The sampler's "sampled in the last 15 s?" and its deletion of day-old samples: a BRIN
    # range (samples arrive in time order) instead of reading every sample, twice a round.
    op.create_index(
        "ix_queue_samples_sampled_at",
        "queue_samples",
        ["sampled_at"],
        unique=False,
        postgresql_using="brin",
        postgresql_with={"pages_per_range": 32},
    )


def downgrade() -> None:
    op.drop_index("ix_queue_samples_sampled_at", table_name="queue_samples")
    op.drop_index("ix_queue_samples_action_id_sampled_at", table_name="queue_samples")
    op.create_index(
        "ix_queue_samples_action_id_sampled_at",
        "queue_samples",
        ["action_id", "sampled_at"],
        unique=False,
    )
    op.execute(DROP_FUNCTIONS)
    op.drop_table("attempt_totals")
    op.drop_index("ix_attempts_queue_id_started_at", table_name="attempts")
    op.create_index("ix_attempts_execution_id", "attempts", ["execution_id"], unique=False)
    op.drop_column("attempts", "queue_id")
