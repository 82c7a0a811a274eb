"""Where a waiting execution stands: its position and an estimated start from recent pace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from app import sql

WINDOW_S = 300


def pace(session: Session, queue_id: int) -> float | None:
    """Starts per second on the line over the last WINDOW_S seconds; None before two."""
    row = session.execute(sql.query("line_pace"), {"queue_id": queue_id, "window": WINDOW_S}).one()
    if row.started < 2 or row.first is None:
        return None
    span = (datetime.now(UTC) - row.first).total_seconds()
    return row.started / span if span > 1 else None


def estimate(session: Session, execution_id: int) -> dict[str, Any]:
    """``position`` (1 = next) and ``eta`` (ISO time) while queued; both None otherwise.

    ``eta`` = now + position / pace, the pace being the line's recent starts per second.
    """
    row = session.execute(sql.query("waiting_position"), {"id": execution_id}).one_or_none()
    if row is None or row.status != "queued":
        return {"position": None, "eta": None, "pace_per_s": None}
    per_s = pace(session, row.queue_id)
    eta = datetime.now(UTC) + timedelta(seconds=row.position / per_s) if per_s else None
    return {
        "position": int(row.position),
        "eta": eta.isoformat() if eta else None,
        "pace_per_s": round(per_s, 3) if per_s else None,
    }
