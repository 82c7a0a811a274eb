"""The dead-letter queue: executions that ended ``dead`` and were not replayed or purged."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app import queries, sql
from app.config import Settings
from app.errors import AlreadyFinished, InvalidParameters, UnknownExecution
from policies import actions, admission, limits, lines


def items(session: Session, limit: int = 100, before: int | None = None) -> list[dict[str, Any]]:
    rows = session.execute(sql.query("dlq_items"), {"limit": limit, "before": before}).mappings()
    return [queries.iso_row(r) for r in rows]


def count(session: Session) -> int:
    return int(session.execute(sql.query("dlq_count")).scalar_one())


def replay(
    session: Session, settings: Settings, execution_id: int, requested_by: str | None = None
) -> admission.Enqueued:
    """Enqueue the dead execution again at the tail of its line, as a new attempt series
    linked to the original (``replay_of``); the original leaves the DLQ.

    The lines come first, as everywhere, in (action, partition key) order: the dead
    execution's own and, if the action's ``partition_by`` changed since, the one its
    parameters map to now. Locking the execution first would deadlock with a cancel of it
    (which holds the line, then wants the execution), and two lines out of order with a
    re-admission of the action.
    """
    line = session.execute(sql.query("dlq_line_of"), {"id": execution_id}).one_or_none()
    if line is None:
        raise UnknownExecution(f"no execution with id {execution_id}")
    keys = {(line.action_id, line.partition_key)}
    action = actions.find(session, settings, [line.ref])[line.ref]
    try:
        params = action.validate(line.parameters)
        keys.add((action.id, limits.partition_key(action.limits.partition_by, params)))
    except InvalidParameters:
        pass  # the enqueue below refuses it with this error
    lines.lock_lines(session, sorted(keys))
    dead = session.execute(sql.query("dlq_lock_dead"), {"id": execution_id}).one_or_none()
    if dead is None:
        raise UnknownExecution(f"no execution with id {execution_id}")
    if dead.status != "dead" or dead.dlq_cleared_at is not None:
        raise AlreadyFinished(f"execution {execution_id} is not in the dead-letter queue")
    enqueued = admission.enqueue(
        session,
        settings,
        dead.ref,
        dead.parameters,
        dead.priority,
        replay_of=dead.id,
        requested_by=requested_by,
    )
    session.execute(sql.query("dlq_clear"), {"id": execution_id})
    return enqueued


def dead_ids(session: Session) -> list[int]:
    return list(session.execute(sql.query("dlq_ids")).scalars())


def purge(session: Session) -> int:
    """Drop every item from the DLQ (the executions and their history stay, marked cleared)."""
    return len(session.execute(sql.query("dlq_purge")).all())
