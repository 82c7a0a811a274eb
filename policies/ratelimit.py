"""Rate limits per line: at most ``count`` grants in any ``per_s`` seconds, for every window.

Checked at grant time under the line's lock, from grants Postgres recorded, so the limit
holds across all hosts and the line keeps its order: a rate-limited line simply grants fewer,
oldest first. When a window is full, ``capacity`` says when it frees up, and the caller sends
the line a wake-up for that moment.

The cost does not grow with ``count``. Each grant of a rate-limited line takes the next
number on the line's row (``queues.rate_grants_total``, under the lock) and is recorded as
``rate_grants (queue_id, n, granted_at)``; ``granted_at`` grows with ``n``. With ``total``
grants so far, a window holds the grants numbered after ``before``, the last one made at or
before ``now - per_s``: one probe of the ``(queue_id, granted_at, n)`` index. It has room for
``count - (total - before)`` more; when full, it frees one ``per_s`` after grant
``total + 1 - count`` was made: one probe of the primary key. Both are the exact sliding
window the limiter counted before (it read up to ``count`` rows per window at every grant:
100,000 under the lock for ``count: 100000``). A token bucket or GCRA keeps one row of state
but lets up to twice ``count`` through in some ``per_s`` seconds (a full bucket spent at the
end of one period, refilled and spent at the start of the next), so it would weaken the
guarantee.

``record`` prunes as it adds: only the last ``max(count) + 1`` grants are kept (any window's
``before`` is among them, since none holds more than its count), deleting the range just
above ``rate_grants_pruned`` so no probe walks dead index entries; at most ``PRUNE_BATCH``
more than it adds, which catches up after a window's count shrinks.

A line's record starts complete when the line is made. A line that existed before these
numbers, that became rate-limited (the grants made meanwhile went unrecorded:
``usher_finish`` grants there without Python) or whose largest count grew past what was kept
is filled once from its history, the grants ``attempts`` and ``executions`` hold, as they
were counted before: the same grants count, whatever the record's age. Every grant of a
rate-limited line goes through ``record``: ``lines.admit`` and the held retries of
``lines.requeue_due``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from app import sql
from policies import policy

# Rows pruned per record beyond the ones it adds: bounded work under the line's lock.
PRUNE_BATCH = 1000


def _windows(session: Session, queue_id: int, windows: tuple[policy.Window, ...]) -> list[Any]:
    return list(
        session.execute(
            sql.query("rate_windows"),
            {
                "queue_id": queue_id,
                "counts": [w.count for w in windows],
                "per_s": [w.per_s for w in windows],
            },
        ).all()
    )


def _complete(rows: list[Any], windows: tuple[policy.Window, ...]) -> bool:
    """Whether the record holds every grant the windows need: filled, and each window's
    edge grant still kept."""
    return all(
        r.recorded and not 1 <= r.total + 1 - w.count <= r.pruned
        for r, w in zip(rows, windows, strict=True)
    )


def _seed(session: Session, queue_id: int, windows: tuple[policy.Window, ...]) -> None:
    session.execute(sql.query("clear_rate_grants"), {"queue_id": queue_id})
    session.execute(
        sql.query("seed_rate_grants"),
        {
            "queue_id": queue_id,
            "count": max(w.count for w in windows) + 1,
            "per_s": max(w.per_s for w in windows),
        },
    )


def capacity(
    session: Session, queue_id: int, windows: tuple[policy.Window, ...]
) -> tuple[int | None, datetime | None]:
    """(grants allowed now, None when unlimited; when the fullest window frees a grant).
    The caller holds the line's lock."""
    if not windows:
        return None, None
    rows = _windows(session, queue_id, windows)
    if not _complete(rows, windows):
        _seed(session, queue_id, windows)
        rows = _windows(session, queue_id, windows)
    allowed: int | None = None
    frees_at: datetime | None = None
    for window, row in zip(windows, rows, strict=True):
        last_out = row.pruned if row.before is None else row.before
        room = window.count - (row.total - last_out)
        allowed = room if allowed is None else min(allowed, room)
        if room <= 0:
            when = row.edge_at + timedelta(seconds=window.per_s)
            frees_at = when if frees_at is None else max(frees_at, when)
    return (None if allowed is None else max(allowed, 0)), frees_at


def record(
    session: Session,
    queue_id: int,
    windows: tuple[policy.Window, ...],
    execution_ids: Sequence[int],
) -> None:
    """Number and record these grants of the line, in grant order, just made (their
    ``scheduled_at`` is the grant's time); the caller holds the line's lock."""
    if not windows or not execution_ids:
        return
    session.execute(
        sql.query("record_rate_grants"),
        {
            "queue_id": queue_id,
            "ids": list(execution_ids),
            "keep": max(w.count for w in windows) + 1,
            "batch": PRUNE_BATCH,
        },
    )
