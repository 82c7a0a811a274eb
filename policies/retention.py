"""History kept for ``USHER_RETENTION_S`` (the audit for ``USHER_AUDIT_RETENTION_S``): the
sweeper removes what is older a batch at a time, each batch its own short transaction,
within a time budget per sweep, so pruning never holds a lock or the sweep for long and a
backlog (a first run on months of history) drains over a few sweeps.

What goes, oldest first (``app/sql/retention.sql``):

- executions finished longer ago, with their attempts and output; a dead one only once it
  has left the dead-letter queue (replayed or purged) that long ago;
- processed events none of whose executions is left, with their enforcements and webhook
  deliveries; an event that failed for good stays;
- schedule fires older than the retention and a day;
- audit rows older than the audit's own retention.

What stays: the lines' counters (``total_*``) and the attempts' totals, which live in their
own rows; the sweeper's samples, which the hour charts read; and every counter of
/metrics, which adds what retention removed (``history_pruned``) to the rows left.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Engine, TextClause

from app import db, sql
from app.config import Settings
from app.statuses import FINISHED

BATCH = 1000
BUDGET_S = 1.0  # of one sweep's time, at most (a batch started before the end finishes)


@dataclass(frozen=True)
class Step:
    name: str  # the sweep's count: <name>_pruned
    statement: TextClause
    audit: bool = False  # kept for the audit's retention, not the history's


STEPS = (
    # Executions before events: an event goes once none of its executions is left.
    Step("executions", sql.query("prune_executions")),
    Step("events", sql.query("prune_events")),
    Step("schedule_fires", sql.query("prune_schedule_fires")),
    Step("audit", sql.query("prune_audit"), audit=True),
)


def autovacuum_on(engine: Engine) -> bool:
    """Whether the server runs autovacuum: without it, the rows retention deletes stay
    as dead tuples (and the tables grow) until someone runs VACUUM."""
    with engine.connect() as conn:
        return bool(conn.execute(sql.query("autovacuum_on")).scalar_one())


def prune(engine: Engine, settings: Settings, budget_s: float = BUDGET_S) -> dict[str, int]:
    """One sweep's pruning: each step's batches until it has nothing older left or the
    budget is spent. How many rows of each went, by ``<step>_pruned``."""
    deadline = time.monotonic() + budget_s
    statuses = [str(status) for status in FINISHED]
    counts = {f"{step.name}_pruned": 0 for step in STEPS}
    for step in STEPS:
        keep_s = settings.audit_retention_s if step.audit else settings.retention_s
        while time.monotonic() < deadline:
            with db.unit_of_work(engine) as session:
                removed = session.execute(
                    step.statement,
                    {"keep_s": keep_s, "batch": BATCH, "statuses": statuses},
                ).scalar_one()
            counts[f"{step.name}_pruned"] += removed
            if removed < BATCH:
                break
    return counts
