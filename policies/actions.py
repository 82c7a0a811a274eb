"""An action as a request for it needs it: its line's limits, its retry policy, its pause and
the check of its parameters, looked up by ref (once for a whole batch)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app import sql
from app.config import Settings
from policies import limits, parameters, retry


@dataclass(frozen=True)
class Action:
    id: int
    ref: str
    timeout_s: int | None
    limits: limits.Limits
    retry: retry.RetryPolicy
    paused: bool
    # The action's parameters, checked (InvalidParameters) and returned as stored.
    validate: Callable[[Any], dict[str, Any]]


def find(session: Session, settings: Settings, refs: Iterable[str]) -> dict[str, Action]:
    """The actions of these refs that exist, by ref."""
    rows = session.execute(sql.query("find_actions"), {"refs": sorted(set(refs))}).all()
    return {
        r.ref: Action(
            r.id,
            r.ref,
            r.timeout_s,
            limits.resolve(r.action_policy, r.pack_policy, settings),
            retry.resolve(r.action_policy, r.pack_policy, settings),
            r.paused,
            parameters.validator(r.parameters_schema, r.runner, settings.max_parameters_bytes),
        )
        for r in rows
    }
