"""``usher bench-web``'s data: a scratch database filled in a few SQL statements
(generate_series, ``seed_*`` in bench.sql): packs, actions (one busy action with a tenth of
the history and a long waiting line, some partitioned actions), their lines, executions in
every state with their attempts, line counters recounted from the rows, an hour of chart
samples, events and enforcements; then VACUUM ANALYZE, as autovacuum would.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

from app import db
from app.cli.bench import statements
from policies import limits

BUSY_SHARE = 10  # every BUSY_SHARE-th execution belongs to the busy action
# Each step and its statement, in the order they run.
SEED = {
    "packs": "seed_packs",
    "actions": "seed_actions",
    "queues": "seed_queues",
    "executions": "seed_executions",
    "tails": "seed_tails",
    "attempts": "seed_attempts",
    "counters": "seed_counters",
    "samples": "seed_samples",
    "events": "seed_events",
    "enforcements": "seed_enforcements",
}


def seed(
    url: str, actions: int = 1000, executions: int = 1_000_000, console: Console | None = None
) -> dict[str, Any]:
    """Fill the (migrated, empty) database at ``url``; returns what was made, with timings."""
    console = console or Console(stderr=True)
    engine = db.make_engine(url)
    busy_queued = min(20_000, max(executions // BUSY_SHARE // 5, 10))
    busy_recent = min(6000, max(executions // BUSY_SHARE // 10, 10))
    params = {
        "packs": max(1, min(actions, actions // 100 or 1)),
        "actions": actions,
        "n": executions,
        "share": BUSY_SHARE,
        "busy_queued": busy_queued,
        "busy_recent": busy_recent,
        "events": max(executions // 200, 100),
    }
    seconds: dict[str, float] = {}
    try:
        for step, name in SEED.items():
            start = time.perf_counter()
            with console.status(f"seeding {step}"), engine.begin() as conn:
                conn.execute(statements.query("seed_random"))
                if step == "attempts":
                    conn.execute(statements.query("attempts_triggers_off"))
                conn.execute(statements.query(name), params)
                if step == "attempts":
                    conn.execute(statements.query("attempts_triggers_on"))
                    conn.execute(statements.query("attempt_totals_rebuild"))
                if step == "actions":
                    # The limits usher_finish reads, as a pack load writes them.
                    with db.sessions(engine)(bind=conn) as session:
                        limits.store(session)
                    params["busy"] = conn.execute(statements.query("seed_busy_action")).scalar_one()
            seconds[step] = round(time.perf_counter() - start, 1)
        with console.status("vacuum analyze"), engine.connect() as conn:
            start = time.perf_counter()
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                statements.query("vacuum_analyze")
            )
            seconds["vacuum analyze"] = round(time.perf_counter() - start, 1)
        with engine.connect() as conn:
            counts = dict(conn.execute(statements.query("seeded_counts")).one()._mapping)
    finally:
        engine.dispose()
    return {"counts": counts, "seconds": seconds}
