"""Delayed runs falling due: each joins its line, in (run_at, id) order, and is admitted.

A request with a time ahead is stored ``delayed`` (``policies.intake``): no seq, no place in
line, not counted on it. ``due`` finds the delayed executions whose time has come (a bounded
batch, oldest time first); ``join`` then takes one line's lock (``lines.lock_line``, before
any execution row of it, as everywhere) and gives them, still ``delayed``, the line's next
seqs and one join time as ``enqueued_at`` and ``queued_at``; the line counts them, and
``lines.admit`` grants what fits. Several beats may do this at once: the second to lock a
line finds its executions joined already, and changes nothing.

The line's ``max_queue_length`` is applied when they join, not when they were asked for
(they held no place then): a line that is full then takes as many as it has room for, and
the rest end ``rejected`` with the reason, as a request to a full line is refused with 429.
Functions take a session and never commit; publish the grants after the commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from app import bounds, sql
from app.config import Settings
from app.errors import InvalidRequest, UsherError
from policies import lines

BATCH = 1000  # delayed executions per look


@dataclass
class Joined:
    """What a join did on one line: the executions that joined (id, seq) and those
    rejected, the grants (publish after commit) and, on a rate-limited line, when to wake
    it."""

    joined: list[tuple[int, int]] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    grants: list[lines.Grant] = field(default_factory=list)
    wake_at: datetime | None = None


def due(session: Session, limit: int = BATCH) -> dict[int, list[int]]:
    """The delayed executions due now, by line (queue id -> ids, oldest time first)."""
    found: dict[int, list[int]] = {}
    for row in session.execute(sql.query("due_delayed"), {"limit": limit}):
        found.setdefault(row.queue_id, []).append(row.id)
    return found


def join(session: Session, settings: Settings, queue_id: int, ids: list[int]) -> Joined:
    """Make these due executions of one line join it (see the module)."""
    line = lines.lock_line(session, settings, queue_id)
    done = Joined()
    left = len(ids)
    while left:
        rows = session.execute(
            sql.query("join_line"),
            {"queue_id": queue_id, "ids": ids, "most": line.limits.max_queue_length},
        ).all()
        if rows:
            n = len(rows)
            lines.count(
                session, {queue_id: {"next_seq": n, "queue_length": n, "total_enqueued": n}}
            )
            done.joined += sorted((r.id, r.seq) for r in rows)
            left -= n
        admitted = lines.admit(session, line)
        done.grants += admitted.grants
        done.wake_at = admitted.wake_at
        # Grants made room: take more, as the same requests one by one would get in.
        if not admitted.grants:
            break
    if left:
        reason = (
            f"the line of {line.action_ref} was full ({line.limits.max_queue_length} waiting) "
            "when it fell due"
        )
        done.rejected = list(
            session.execute(
                sql.query("reject_delayed"), {"queue_id": queue_id, "ids": ids, "reason": reason}
            ).scalars()
        )
    return done


def next_due_s(session: Session) -> float | None:
    """Seconds until the next delayed execution falls due (by the database's clock; 0 or
    less: due already), None if none waits: how long a beat may sleep."""
    wait = session.execute(sql.query("next_delayed_due")).scalar_one()
    return None if wait is None else float(wait)


def due_times(
    session: Session, timed: Iterable[tuple[int, datetime | None, float | None]]
) -> tuple[dict[int, datetime], dict[int, UsherError]]:
    """When each request ``(index, run_at, delay_s)`` with a time still ahead falls due, by
    the database's clock read once (the requests of one batch asking for the same delay
    share one time); a time further ahead than ``bounds.DELAY_S`` is that request's error.
    A request without a time, or with one already passed, joins at once: it is in neither."""
    timed = [(i, at, delay) for i, at, delay in timed if at is not None or delay]
    if not timed:
        return {}, {}
    now: datetime = session.execute(sql.query("database_now")).scalar_one()
    most = now + timedelta(seconds=bounds.DELAY_S.high)
    due: dict[int, datetime] = {}
    errors: dict[int, UsherError] = {}
    for index, run_at, delay_s in timed:
        at = run_at or now + timedelta(seconds=delay_s or 0)
        if at > most:
            errors[index] = InvalidRequest(
                f"run_at: at most {bounds.DELAY_S.high / 86_400:g} days ahead "
                f"({most.isoformat(timespec='seconds')})"
            )
        elif at > now:
            due[index] = at
    return due, errors
