"""Where a waiting execution stands: its position and an estimated start from recent pace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

WINDOW_S = 300


def estimate(session: Session, execution_id: int) -> dict[str, Any]:
    """``position`` (1 = next) and ``eta`` (ISO time) while queued; both None otherwise.

    The pace is the line's grants over the last WINDOW_S seconds (attempts that started);
    with no recent grant there is no estimate. ``eta`` = now + position / pace.
    """
    row = session.execute(
        text("""
            SELECT e.status, e.queue_id, (
                SELECT count(*) FROM executions w
                WHERE w.queue_id = e.queue_id AND w.status = 'queued'
                  AND (w.priority > e.priority OR (w.priority = e.priority AND w.seq <= e.seq))
            ) AS position, (
                SELECT count(*) FROM attempts t JOIN executions x ON x.id = t.execution_id
                WHERE x.queue_id = e.queue_id
                  AND t.started_at > now() - make_interval(secs => :window)
            ) + (
                SELECT count(*) FROM executions x
                WHERE x.queue_id = e.queue_id AND x.status = 'running'
                  AND x.started_at > now() - make_interval(secs => :window)
            ) AS started_recently, (
                SELECT min(t.started_at) FROM attempts t JOIN executions x
                ON x.id = t.execution_id WHERE x.queue_id = e.queue_id
                  AND t.started_at > now() - make_interval(secs => :window)
            ) AS first_start
            FROM executions e WHERE e.id = :id
        """),
        {"id": execution_id, "window": WINDOW_S},
    ).one_or_none()
    if row is None or row.status != "queued":
        return {"position": None, "eta": None, "pace_per_s": None}
    now = datetime.now(UTC)
    span = (now - row.first_start).total_seconds() if row.first_start else 0.0
    pace = row.started_recently / span if span > 1 and row.started_recently >= 2 else None
    eta = now + timedelta(seconds=row.position / pace) if pace else None
    return {
        "position": int(row.position),
        "eta": eta.isoformat() if eta else None,
        "pace_per_s": round(pace, 3) if pace else None,
    }
