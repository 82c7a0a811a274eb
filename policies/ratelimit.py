"""Rate limits per line: at most ``count`` grants in any ``per_s`` seconds, for every window.

Counted at grant time from the grants Postgres recorded (each attempt's ``scheduled_at``),
under the line's lock, so the limit holds across all hosts and the line keeps its order: a
rate-limited line simply grants fewer, oldest first. When a window is full, ``capacity``
says when it frees up, and the caller sends the line a wake-up for that moment.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from policies import policy

RECENT_GRANTS = """
    SELECT s FROM (
        SELECT t.scheduled_at AS s FROM attempts t JOIN executions e ON e.id = t.execution_id
        WHERE e.queue_id = :queue_id
          AND t.scheduled_at > clock_timestamp() - make_interval(secs => :per_s)
        UNION ALL
        SELECT e.scheduled_at FROM executions e
        WHERE e.queue_id = :queue_id
          AND e.scheduled_at > clock_timestamp() - make_interval(secs => :per_s)
          AND NOT EXISTS (SELECT 1 FROM attempts t
                          WHERE t.execution_id = e.id AND t.attempt = e.attempt)
    ) grants ORDER BY s DESC LIMIT :count
"""


def capacity(
    session: Session, queue_id: int, windows: tuple[policy.Window, ...]
) -> tuple[int | None, datetime | None]:
    """(grants allowed now, None when unlimited; when the fullest window frees a grant)."""
    allowed: int | None = None
    frees_at: datetime | None = None
    for window in windows:
        recent = list(
            session.execute(
                text(RECENT_GRANTS),
                {"queue_id": queue_id, "per_s": window.per_s, "count": window.count},
            ).scalars()
        )
        room = window.count - len(recent)
        allowed = room if allowed is None else min(allowed, room)
        if room <= 0:
            # The oldest of the last `count` grants leaves the window first
            when = recent[-1] + timedelta(seconds=window.per_s)
            frees_at = when if frees_at is None else max(frees_at, when)
    return (None if allowed is None else max(allowed, 0)), frees_at
