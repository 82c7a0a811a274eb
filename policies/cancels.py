"""Cancel: an execution leaves its line before it ends on its own.

``cancel`` takes the line's lock (``policies.lines``) and then ``leave`` changes the row:
a delayed, queued, scheduled, running or retrying execution ends ``cancelled`` with the
reason as its error, the line counts it out (the slot it held, at its line and at every
level it holds, is freed) and a freed slot goes to the next in line. ``leave`` is what a
``when_busy`` request uses on the other executions of its own line, whose lock it holds
already (``policies.busy``). Functions take a session and never commit; stop a running
one's worker and publish the grants and execution events after the commit
(``app.celery.after_cancel``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from app import models, queries, sql
from app.config import Settings
from app.errors import AlreadyFinished
from policies import emitted, lines

BY_REQUEST = "cancelled by request"


@dataclass(frozen=True)
class Cancelled:
    previous_status: str
    grants: list[lines.Grant]
    events: tuple[int, ...] = ()


def cancel(
    session: Session,
    settings: Settings,
    execution_id: int,
    reason: str = BY_REQUEST,
    cancelled_by: str | None = None,
) -> Cancelled:
    """Cancel a delayed, queued, scheduled or running execution; a freed slot goes to the next
    in line. ``cancelled_by`` is stored on it (a token's name, ``cli:<user>``)."""
    line = lines.lock_line_of(session, settings, execution_id)
    left = leave(session, line, execution_id, reason, cancelled_by)
    return Cancelled(left.previous_status, left.grants, emitted.read(session))


def leave(
    session: Session,
    line: lines.Line,
    execution_id: int,
    reason: str,
    cancelled_by: str | None = None,
) -> Cancelled:
    """``cancel`` under the line's lock, which the caller holds; the execution events it
    emitted are not read (``emitted.read`` once the caller is done)."""
    previous, held = session.execute(sql.query("lock_execution"), {"id": execution_id}).one()
    if previous not in models.CANCELLABLE:
        raise AlreadyFinished(f"execution {execution_id} is already {previous}")
    counter = {
        "delayed": None,  # it holds no place yet: only its own row changes
        "queued": "queue_length",
        "scheduled": "active_count",
        "running": "active_count",
        "retrying": "active_count" if held else None,
    }[previous]
    session.execute(
        sql.query("cancel_execution"), {"id": execution_id, "reason": reason, "by": cancelled_by}
    )
    freed = {counter: -1} if counter else {}
    if previous != "delayed":  # the line counts what joined it
        lines.count(session, {line.queue_id: {"total_cancelled": 1, **freed}})
    grants = lines.admit(session, line).grants if counter == "active_count" else []
    return Cancelled(previous, grants)


@dataclass(frozen=True)
class CancelledWaiting:
    """What ``cancel_waiting`` cancelled: the ids, oldest first, and the execution events."""

    ids: list[int]
    events: tuple[int, ...] = ()


def cancel_waiting(
    session: Session,
    settings: Settings,
    action_ref: str,
    partition_key: str | None = None,
    cancelled_by: str | None = None,
) -> CancelledWaiting:
    """Cancel every queued execution of the action's line ``partition_key`` (of each of its
    lines when None), each line under its lock, through ``leave``: the counters and events
    are those of single cancels. A queued one holds no slot, so nothing is granted; delayed
    ones are not in line yet and stay."""
    found = session.execute(
        sql.query("action_line_ids"), {"ref": action_ref, "k": partition_key}
    ).all()
    if not found:
        refs = list(session.execute(sql.query("action_refs")).scalars())
        if action_ref not in refs:
            raise queries.unknown_action(session, action_ref, refs)
    ids: list[int] = []
    for row in found:  # in partition-key order, as every multi-line transaction locks
        line = lines.lock_line(session, settings, row.id)
        waiting = session.execute(
            sql.query("line_others"), {"queue_id": row.id, "keep": 0, "active": False}
        ).scalars()
        for execution_id in list(waiting):
            leave(session, line, execution_id, BY_REQUEST, cancelled_by)
            ids.append(int(execution_id))
    return CancelledWaiting(ids, emitted.read(session) if ids else ())
