"""A line: its lock (the semaphore), its counters, and the grant of its free slots.

Each action has one line per partition, a row in ``queues``. Its lock
(``SELECT ... FOR NO KEY UPDATE``) is always taken before any execution row of that line is
changed, so everything that changes a line serialises on it and never deadlocks. Plain
``FOR UPDATE`` would conflict with the KEY SHARE lock an execution INSERT's foreign key
takes. Several lines are locked in (action id, partition key) order. Timestamps are
``clock_timestamp()`` read under the lock, so they follow lock order and the invariants can
be checked from them. Functions take a session and never commit.

The counters on the row (``queue_length``, ``active_count``, ``next_seq``, the totals) are
written by ``count`` here and by the PL/pgSQL of ``app/sql/functions.sql`` (``usher_admit``,
``usher_release``, ``usher_finish``), nowhere else; the numbered grants of a rate-limited
line (``rate_grants_*``) by ``policies.ratelimit``. The statements are in
``app/sql/lines.sql``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app import sql
from app.config import Settings
from app.errors import QueueFull, UnknownExecution
from policies import levels, limits, ratelimit, retry


@dataclass(frozen=True)
class Grant:
    """A slot granted to an execution: publish ``execute(execution_id, attempt)`` after commit."""

    execution_id: int
    attempt: int
    action_ref: str
    timeout_s: int | None


@dataclass(frozen=True)
class Line:
    queue_id: int
    action_ref: str
    timeout_s: int | None
    limits: limits.Limits
    retry: retry.RetryPolicy
    paused: bool = False
    # Its level group (policies.levels), None for a plain line; read under its lock.
    group: int | None = None


@dataclass(frozen=True)
class Admitted:
    """What ``admit`` granted and, on a rate-limited line, when its window next frees a
    grant (the line should be woken then)."""

    grants: list[Grant]
    wake_at: datetime | None = None


def full(
    action_ref: str, key: str, max_queue_length: int, retry_after_s: int | None = None
) -> QueueFull:
    """The refusal of a request to a line already holding ``max_queue_length`` waiting;
    ``retry_after_s`` from the line's pace (``eta.retry_after_s``), else QueueFull's own."""
    return QueueFull(
        f"the line of {action_ref}{f' [{key}]' if key else ''} is full "
        f"({max_queue_length} waiting); retry later or raise max_queue_length",
        retry_after_s,
    )


# What ``count`` may add to; usher_admit, usher_release and usher_finish move the rest.
COUNTERS = (
    "next_seq",
    "queue_length",
    "active_count",
    "total_enqueued",
    "total_cancelled",
    "total_expired",
)


def count(session: Session, changes: Mapping[int, Mapping[str, int]]) -> None:
    """Add to the counters of these lines (queue id -> counter -> amount, any of
    ``COUNTERS``), one statement for all; the caller holds their locks. The amounts travel
    as one JSON document: cheaper to encode and to parse than one array per counter."""
    if not changes:
        return
    rows = [
        {"id": q, **{name: amounts.get(name, 0) for name in COUNTERS}}
        for q, amounts in changes.items()
    ]
    session.execute(sql.query("count_lines"), {"rows": json.dumps(rows)})


def _line(session: Session, settings: Settings, row: Any) -> Line:
    levels.confirm(session, [row.level_group])
    return Line(
        queue_id=row.queue_id,
        action_ref=row.ref,
        timeout_s=row.timeout_s,
        limits=limits.resolve(row.action_policy, row.pack_policy, settings),
        retry=retry.resolve(row.action_policy, row.pack_policy, settings),
        paused=row.paused,
        group=row.level_group,
    )


def lock_line(session: Session, settings: Settings, queue_id: int) -> Line:
    """The line's lock, after its level group's (if it is in one)."""
    levels.lock(session, [levels.group_of_line(session, queue_id)])
    row = session.execute(sql.query("lock_line"), {"queue_id": queue_id}).one()
    return _line(session, settings, row)


def lock_line_of(session: Session, settings: Settings, execution_id: int) -> Line:
    levels.lock(session, [levels.group_of_execution(session, execution_id)])
    row = session.execute(sql.query("lock_line_of"), {"execution_id": execution_id}).one_or_none()
    if row is None:
        raise UnknownExecution(f"no execution with id {execution_id}")
    return _line(session, settings, row)


def lock_lines(session: Session, keys: list[tuple[int, str]]) -> dict[tuple[int, str], Any]:
    """Create-or-lock every line at once, in the order given (sort them by (action id,
    partition key), the one order of every multi-line transaction), after the level groups
    of their actions; the rows come back as they are under the lock."""
    levels.lock(session, levels.groups_of_actions(session, sorted({a for a, _ in keys})))
    rows = session.execute(
        sql.query("lock_lines"),
        {"actions": [a for a, _ in keys], "keys": [k for _, k in keys]},
    ).all()
    levels.confirm(session, [r.level_group for r in rows])
    return {(r.action_id, r.partition_key): r for r in rows}


def admit(session: Session, line: Line) -> Admitted:
    """Grant free slots to the oldest eligible executions, in (priority DESC, seq ASC) order.

    Eligible: waiting (``queued``), or backing off (``retrying``) and already due, so a due
    retry keeps its place in line even before the sweeper moves it back to ``queued``.
    The caller holds the line's lock, so this statement's snapshot (taken after the lock)
    sees every committed waiting row and the current ``active_count``. A paused line grants
    nothing; its waiting executions keep their places.
    """
    group = line.group
    if group is None and line.limits.leveled:  # a Line made from lock_lines' rows
        group = levels.group_of_line(session, line.queue_id)
    if group is not None:
        # Across the whole group: the slot a release frees at a level may go to another line.
        done = levels.admit_group(session, group, line.limits.default_concurrency)
        grants = [Grant(g.execution_id, g.attempt, g.action_ref, g.timeout_s) for g in done.grants]
        return Admitted(grants, done.wake_at)
    if line.paused:
        return Admitted([])
    cap: int | None = None
    frees_at = None
    if line.limits.rate:
        cap, frees_at = ratelimit.capacity(session, line.queue_id, line.limits.rate)
        if cap == 0:
            return Admitted([], frees_at)
    rows = session.execute(
        sql.query("admit"),
        {"queue_id": line.queue_id, "limit": line.limits.concurrency, "cap": cap},
    ).all()
    grants = [Grant(r.execution_id, r.attempt, line.action_ref, line.timeout_s) for r in rows]
    ratelimit.record(session, line.queue_id, line.limits.rate, [g.execution_id for g in grants])
    return Admitted(grants, frees_at)


def requeue_due(session: Session, line: Line) -> Admitted:
    """Move due retries back into the line (the caller holds its lock).

    A retry that kept its slot (``hold_slot``) is granted at once; the others become
    ``queued`` again with their original seq, so they keep their place. Then ``admit``.
    """
    due = session.execute(sql.query("requeue_due"), {"queue_id": line.queue_id}).all()
    if due:
        back = sum(1 for r in due if r.status == "queued")
        count(session, {line.queue_id: {"queue_length": back}})
    held = sorted((r for r in due if r.status == "scheduled"), key=lambda r: (-r.priority, r.seq))
    # Granted without asking the rate limit, as before, but counted in its windows.
    ratelimit.record(session, line.queue_id, line.limits.rate, [r.id for r in held])
    then = admit(session, line)
    grants = [Grant(r.id, r.attempt, line.action_ref, line.timeout_s) for r in held]
    return Admitted(grants + then.grants, then.wake_at)


def expire(session: Session, line: Line) -> int:
    """Mark executions that waited longer than the line's queue timeout as expired.

    The wait counts from when the execution joined the line: ``queued_at``, which for a
    retry back in line is the end of its backoff, not its first enqueue (a retry of a long
    run would otherwise expire the moment it rejoined). The caller holds the line's lock.
    """
    gone = len(
        session.execute(
            sql.query("expire"),
            {"queue_id": line.queue_id, "timeout": line.limits.queue_timeout_s},
        ).all()
    )
    if gone:
        count(session, {line.queue_id: {"queue_length": -gone, "total_expired": gone}})
    return gone
