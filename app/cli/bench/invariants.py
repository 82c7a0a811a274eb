"""The invariants of DESIGN.md, checked on the timestamps Postgres recorded."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text

from app import models


def _rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params).all())


def queue_ids(engine: Engine, action_ref: str) -> list[int]:
    return [
        r.id
        for r in _rows(
            engine,
            "SELECT q.id FROM queues q JOIN actions a ON a.id = q.action_id WHERE a.ref = :ref",
            ref=action_ref,
        )
    ]


# Every attempt of every execution of the lines: finished ones from the attempts table, the
# current one from the execution row when it has no history row yet.
TRIES = """
    WITH tries AS (
        SELECT t.execution_id AS id, t.attempt, t.queued_at, t.scheduled_at, t.finished_at,
               t.kept_slot
        FROM attempts t JOIN executions e ON e.id = t.execution_id
        WHERE e.queue_id = ANY(:ids)
        UNION ALL
        SELECT e.id, e.attempt, e.queued_at, e.scheduled_at, e.finished_at, e.holds_slot
        FROM executions e
        WHERE e.queue_id = ANY(:ids) AND NOT EXISTS (
            SELECT 1 FROM attempts t WHERE t.execution_id = e.id AND t.attempt = e.attempt)
    )
    SELECT tries.*, e.queue_id, e.priority, e.seq,
           coalesce(lag(tries.kept_slot) OVER (
               PARTITION BY tries.id ORDER BY tries.attempt), false) AS after_kept
    FROM tries JOIN executions e ON e.id = tries.id
"""


def _tries(engine: Engine, queue_ids: list[int]) -> list[Any]:
    return _rows(engine, TRIES, ids=queue_ids)


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
    return int(
        _rows(
            engine,
            f"""WITH x AS ({TRIES})
               SELECT count(*) AS n FROM x b JOIN x a
                 ON a.queue_id = b.queue_id AND a.priority = b.priority AND a.seq < b.seq
               WHERE b.scheduled_at IS NOT NULL AND NOT a.after_kept
                 AND a.queued_at <= b.scheduled_at
                 AND COALESCE(a.scheduled_at, a.finished_at, 'infinity') > b.scheduled_at""",
            ids=queue_ids,
        )[0].n
    )


def unfinished(engine: Engine, action_ref: str) -> int:
    return int(
        _rows(
            engine,
            """SELECT count(*) AS n FROM executions e JOIN actions a ON a.id = e.action_id
               WHERE a.ref = :ref AND e.status <> ALL(:final)""",
            ref=action_ref,
            final=list(models.FINISHED),
        )[0].n
    )


def counter_mismatches(engine: Engine) -> list[dict[str, Any]]:
    """Queue rows whose counters differ from a recount of the executions table."""
    rows = _rows(
        engine,
        """
        SELECT q.id, q.queue_length, q.active_count, q.total_enqueued, q.total_completed,
               q.total_failed, q.total_cancelled, q.total_expired, q.next_seq,
               count(e.id) FILTER (WHERE e.status = 'queued') AS r_queue_length,
               count(e.id) FILTER (WHERE e.status IN ('scheduled', 'running')
                                   OR (e.status = 'retrying' AND e.holds_slot)) AS r_active_count,
               count(e.id) AS r_total_enqueued,
               count(e.id) FILTER (WHERE e.status = 'succeeded') AS r_total_completed,
               count(e.id) FILTER (WHERE e.status IN ('failed', 'timed_out', 'dead'))
                   AS r_total_failed,
               count(e.id) FILTER (WHERE e.status = 'cancelled') AS r_total_cancelled,
               count(e.id) FILTER (WHERE e.status = 'expired') AS r_total_expired,
               coalesce(max(e.seq), 0) AS r_next_seq
        FROM queues q LEFT JOIN executions e ON e.queue_id = q.id
        GROUP BY q.id
        """,
    )
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
