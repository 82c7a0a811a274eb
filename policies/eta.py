"""Where a waiting execution stands: its position and an estimated start from recent pace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

WINDOW_S = 300

# Finished attempts carry their line (attempts.queue_id): the (queue_id, started_at) index
# reads only the window, whatever the line's history. Running executions are read through
# the partial index of active ones (at most the sum of the limits): a cached generic plan
# would otherwise AND it with every execution of a line of unknown size.
PACE = """
    WITH running AS MATERIALIZED (
        SELECT queue_id, started_at FROM executions WHERE status = 'running'
    )
    SELECT count(*) AS started, min(s) AS first FROM (
        SELECT t.started_at AS s FROM attempts t
        WHERE t.queue_id = :queue_id AND t.started_at > now() - make_interval(secs => :window)
        UNION ALL
        SELECT x.started_at FROM running x
        WHERE x.queue_id = :queue_id AND x.started_at > now() - make_interval(secs => :window)
    ) recent
"""


def pace(session: Session, queue_id: int) -> float | None:
    """Starts per second on the line over the last WINDOW_S seconds; None before two."""
    row = session.execute(text(PACE), {"queue_id": queue_id, "window": WINDOW_S}).one()
    if row.started < 2 or row.first is None:
        return None
    span = (datetime.now(UTC) - row.first).total_seconds()
    return row.started / span if span > 1 else None


def estimate(session: Session, execution_id: int) -> dict[str, Any]:
    """``position`` (1 = next) and ``eta`` (ISO time) while queued; both None otherwise.

    ``eta`` = now + position / pace, the pace being the line's recent starts per second.
    """
    row = session.execute(
        text("""
            SELECT e.status, e.queue_id, (
                SELECT count(*) FROM executions w
                WHERE w.queue_id = e.queue_id AND w.status = 'queued'
                  AND (w.priority > e.priority OR (w.priority = e.priority AND w.seq <= e.seq))
            ) AS position
            FROM executions e WHERE e.id = :id
        """),
        {"id": execution_id},
    ).one_or_none()
    if row is None or row.status != "queued":
        return {"position": None, "eta": None, "pace_per_s": None}
    per_s = pace(session, row.queue_id)
    eta = datetime.now(UTC) + timedelta(seconds=row.position / per_s) if per_s else None
    return {
        "position": int(row.position),
        "eta": eta.isoformat() if eta else None,
        "pace_per_s": round(per_s, 3) if per_s else None,
    }
