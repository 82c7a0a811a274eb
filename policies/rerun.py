"""Re-runs: a new execution of an execution's action with its parameters, edited.

The overrides are merged into the original's parameters (top-level keys; an override
replaces the original's value whole), and the result goes through the one enqueue path as
any request does: checked against the action's schema as it is now (InvalidParameters),
refused by a full line (QueueFull), its own line's FIFO order. The original is only read:
it may be in any state, finished or not. The new execution names it in ``rerun_of``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app import sql
from app.config import Settings
from app.errors import InvalidParameters, UnknownExecution
from policies import admission


def rerun(
    session: Session,
    settings: Settings,
    execution_id: int,
    overrides: dict[str, Any] | None = None,
    requested_by: str | None = None,
) -> admission.Enqueued:
    """Enqueue the execution again with ``overrides`` merged into its parameters."""
    source = session.execute(sql.query("rerun_source"), {"id": execution_id}).one_or_none()
    if source is None:
        raise UnknownExecution(f"no execution with id {execution_id}")
    if overrides and not isinstance(source.parameters, dict):
        raise InvalidParameters(f"execution {execution_id}'s parameters are no object to edit")
    params = {**source.parameters, **overrides} if overrides else source.parameters
    return admission.enqueue(
        session,
        settings,
        source.ref,
        params,
        source.priority,
        requested_by=requested_by,
        rerun_of=execution_id,
    )
