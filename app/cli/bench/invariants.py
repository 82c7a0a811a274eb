"""The invariants of DESIGN.md, checked on the timestamps Postgres recorded."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from app import models
from app.cli.bench import statements


def _rows(engine: Engine, name: str, **params: Any) -> list[Any]:
    """The rows of statement ``name`` of ``bench.sql``."""
    with engine.connect() as conn:
        return list(conn.execute(statements.query(name), params).all())


def queue_ids(engine: Engine, action_ref: str) -> list[int]:
    return [r.id for r in _rows(engine, "line_queue_ids", ref=action_ref)]


# The text of bench.sql's line_tries (every attempt of every execution of the lines), by the
# name tests.support.invariants gives the tests.
TRIES = statements.QUERIES["line_tries"]


def _tries(engine: Engine, queue_ids: list[int]) -> list[Any]:
    return _rows(engine, "line_tries", ids=queue_ids)


def slot_intervals(engine: Engine, queue_ids: list[int]) -> list[tuple[Any, Any]]:
    """When each execution held a slot: every granted attempt from its grant to its end,
    and across a retry's back-off when it kept the slot (retry.hold_slot)."""
    by_execution: dict[int, list[Any]] = {}
    for row in _tries(engine, queue_ids):
        by_execution.setdefault(row.id, []).append(row)
    intervals = []
    for tries in by_execution.values():
        tries.sort(key=lambda r: r.attempt)
        for i, row in enumerate(tries):
            if row.scheduled_at is not None:
                intervals.append((row.scheduled_at, row.finished_at))
            if row.kept_slot and row.finished_at is not None:
                following = tries[i + 1] if i + 1 < len(tries) else None
                until = following.scheduled_at or following.finished_at if following else None
                intervals.append((row.finished_at, until))
    return intervals


def max_active(engine: Engine, queue_ids: list[int]) -> int:
    """The most executions that held a slot at one instant."""
    events = []
    for start, end in slot_intervals(engine, queue_ids):
        events.append((start, 1))
        if end is not None:
            events.append((end, -1))
    # A release and the grant it makes share an instant: count the release first.
    events.sort(key=lambda e: (e[0], e[1]))
    active = peak = 0
    for _, delta in events:
        active += delta
        peak = max(peak, active)
    return peak


def fifo_violations(engine: Engine, queue_ids: list[int]) -> int:
    """Grants made while an older execution of the same line and priority was eligible and
    waiting: queued, or a retry already due (a retry that kept its slot does not wait)."""
    return int(_rows(engine, "line_fifo_violations", ids=queue_ids)[0].n)


def unfinished(engine: Engine, action_ref: str) -> int:
    return int(_rows(engine, "line_unfinished", ref=action_ref, final=list(models.FINISHED))[0].n)


def counter_mismatches(engine: Engine) -> list[dict[str, Any]]:
    """Queue rows whose counters differ from a recount of the executions table, and levels
    (totals, pools) whose active count does, or that a finished execution still holds."""
    rows = _rows(engine, "counter_recount")
    bad = []
    for r in rows:
        row = r._asdict()
        diffs = {
            k: (row[k], row[f"r_{k}"])
            for k in (*models.COUNTERS, "next_seq")
            if row[k] != row[f"r_{k}"]
        }
        if diffs:
            bad.append({"queue_id": row["id"], **diffs})
    for level in _rows(engine, "level_recount"):
        if level.active != level.r_active or level.stray:
            bad.append(
                {"level": level.ref, "active": (level.active, level.r_active), "stray": level.stray}
            )
    return bad


def check_line(engine: Engine, action_ref: str, limit: int) -> None:
    """Every invariant for one action: nothing left over, the limit, FIFO, the counters."""
    ids = queue_ids(engine, action_ref)
    assert unfinished(engine, action_ref) == 0
    for queue_id in ids:
        peak = max_active(engine, [queue_id])
        assert 1 <= peak <= limit, f"line {queue_id} of {action_ref}: {peak} active, limit {limit}"
        assert fifo_violations(engine, [queue_id]) == 0
    assert counter_mismatches(engine) == []


def check(engine: Engine, limits: dict[str, int], executions: int) -> dict[str, int]:
    """A benchmark run's invariants, as counts that must all be 0 (``peak_over_limit`` the
    excess): ``limits`` maps each action of the run to its limit, ``executions`` were asked."""
    over = violations = 0
    for ref, limit in limits.items():
        for queue_id in queue_ids(engine, ref):
            over = max(over, max_active(engine, [queue_id]) - limit)
            violations += fifo_violations(engine, [queue_id])
    with engine.connect() as conn:
        succeeded = conn.execute(
            statements.query("run_succeeded"), {"refs": list(limits)}
        ).scalar_one()
    return {
        "lost": executions - int(succeeded),
        "peak_over_limit": over,
        "fifo_violations": violations,
        "counter_mismatches": len(counter_mismatches(engine)),
    }
