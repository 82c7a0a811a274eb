"""Rate limits per line: at most ``count`` grants in any ``per_s`` seconds, for every window.

Counted at grant time from the grants Postgres recorded (each attempt's ``scheduled_at``),
under the line's lock, so the limit holds across all hosts and the line keeps its order: a
rate-limited line simply grants fewer, oldest first. When a window is full, ``capacity``
says when it frees up, and the caller sends the line a wake-up for that moment.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from app import sql
from policies import policy


def capacity(
    session: Session, queue_id: int, windows: tuple[policy.Window, ...]
) -> tuple[int | None, datetime | None]:
    """(grants allowed now, None when unlimited; when the fullest window frees a grant)."""
    allowed: int | None = None
    frees_at: datetime | None = None
    for window in windows:
        recent = list(
            session.execute(
                sql.query("recent_grants"),
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
