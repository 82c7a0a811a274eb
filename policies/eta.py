"""Where a waiting execution stands: its position and when it should start.

The start is worked out from the line's slots: each of its ``limit`` slots frees when its
running execution has run as long as the line's recent runs took on average (an idle slot
is free now), and the waiting executions take the slots in line order as they free. The
recent pace (starts per second over the last WINDOW_S) was the estimate before: it counts
the idle minutes before a burst as slowness and guessed 23 s for what took 4. It stays the
fallback for a line with no finished run yet, and ``pace_per_s`` shows the slots' pace.
A paused line has no estimate.

``retry_after_s`` is the same model seen from a request the line refused because it is
full: a place frees when the head of the line is granted, so it is the wait of position 1
(or, on a rate-limited line whose window is full, until the window frees, if later).
"""

from __future__ import annotations

import heapq
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from app import sql
from app.config import Settings
from policies import limits, ratelimit

WINDOW_S = 300
# Past this many places the slots are taken as a steady pace (limit per mean run).
SIMULATED = 10_000
# A Retry-After longer than this is said as this: a client may look again within the hour.
MOST_RETRY_AFTER_S = 3600


def pace(session: Session, queue_id: int) -> float | None:
    """Starts per second on the line over the last WINDOW_S seconds; None before two."""
    row = session.execute(sql.query("line_pace"), {"queue_id": queue_id, "window": WINDOW_S}).one()
    if row.started < 2 or row.first is None:
        return None
    span = (datetime.now(UTC) - row.first).total_seconds()
    return row.started / span if span > 1 else None


def wait_s(position: int, limit: int, mean_run_s: float, running_for_s: list[float]) -> float:
    """Seconds until the execution at ``position`` (1 = next) starts, on ``limit`` slots of
    which the running ones have run ``running_for_s`` so far, each run taking
    ``mean_run_s``."""
    busy = sorted(running_for_s, reverse=True)[:limit]
    free = [max(mean_run_s - ran, 0.0) for ran in busy] + [0.0] * (limit - len(busy))
    heapq.heapify(free)
    start = 0.0
    for _ in range(min(position, SIMULATED)):
        start = heapq.heappop(free)
        heapq.heappush(free, start + mean_run_s)
    if position > SIMULATED:
        start += (position - SIMULATED) * mean_run_s / limit
    return start


def estimate(
    session: Session, execution_id: int, settings: Settings | None = None
) -> dict[str, Any]:
    """``position`` (1 = next) and ``eta`` (ISO time) while queued; both None otherwise.
    ``paused`` says why a waiting execution has no ``eta``."""
    row = session.execute(sql.query("waiting_position"), {"id": execution_id}).one_or_none()
    if row is None or row.status != "queued":
        return {"position": None, "eta": None, "pace_per_s": None, "paused": False}
    line = session.execute(sql.query("line_slots"), {"queue_id": row.queue_id}).one()
    position = int(row.position)
    if line.paused:
        return {"position": position, "eta": None, "pace_per_s": None, "paused": True}
    now = datetime.now(UTC)
    if line.mean_run_s is not None:
        limit = line.resolved_concurrency or (settings or Settings()).default_max_concurrent
        mean = max(float(line.mean_run_s), 0.001)
        running = [(now - started).total_seconds() for started in line.running]
        per_s: float | None = limit / mean
        eta: datetime | None = now + timedelta(seconds=wait_s(position, limit, mean, running))
    else:
        per_s = pace(session, row.queue_id)
        eta = now + timedelta(seconds=position / per_s) if per_s else None
    return {
        "position": position,
        "eta": eta.isoformat() if eta else None,
        "pace_per_s": round(per_s, 3) if per_s else None,
        "paused": False,
    }


def retry_after_s(
    session: Session, action_id: int, key: str, line_limits: limits.Limits
) -> int | None:
    """Whole seconds (1 to MOST_RETRY_AFTER_S) until a place should free in the line of
    ``action_id`` and partition ``key``, which is full: until its head is granted. None
    when the line has no pace yet (no finished run, fewer than two recent starts) or is
    paused: the caller says a default. The caller holds the line's lock (a rate-limited
    line's record may be filled)."""
    queue_id = session.execute(sql.query("line_id"), {"a": action_id, "k": key}).scalar_one()
    line = session.execute(sql.query("line_slots"), {"queue_id": queue_id}).one()
    if line.paused:
        return None
    now = datetime.now(UTC)
    wait: float | None
    if line.mean_run_s is not None:
        mean = max(float(line.mean_run_s), 0.001)
        running = [(now - started).total_seconds() for started in line.running]
        wait = wait_s(1, line_limits.concurrency, mean, running)
    else:
        per_s = pace(session, queue_id)
        wait = 1 / per_s if per_s else None
    if line_limits.rate:
        _, frees_at = ratelimit.capacity(session, queue_id, line_limits.rate)
        if frees_at is not None:
            wait = max(wait or 0.0, (frees_at - now).total_seconds())
    if wait is None:
        return None
    return min(max(math.ceil(wait), 1), MOST_RETRY_AFTER_S)
