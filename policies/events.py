"""Events in, enforcements out: match enabled rules and enqueue through admission."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from app import queries
from app.config import Settings
from app.errors import InvalidParameters, InvalidRequest, NotFound, UsherError
from policies import admission, criteria, templates


@dataclass(frozen=True)
class Enforcement:
    id: int
    rule: str
    status: str
    execution_id: int | None
    reason: str | None


@dataclass(frozen=True)
class Processed:
    enforcements: list[Enforcement]
    grants: list[admission.Grant]


def store(session: Session, trigger: Any, payload: Any) -> int:
    if not isinstance(trigger, str) or not trigger or len(trigger) > 200 or "\x00" in trigger:
        raise InvalidRequest("'trigger' must be a non-empty string of at most 200 characters")
    try:
        document = json.dumps(payload if payload is not None else {}, allow_nan=False)
    except ValueError:
        raise InvalidRequest("'payload' must be JSON without NaN or Infinity") from None
    if "\\u0000" in document:
        raise InvalidRequest("'payload' must not contain NUL characters")
    return int(
        session.execute(
            text("""INSERT INTO events (trigger, payload) VALUES (:t, CAST(:p AS jsonb))
                    RETURNING id"""),
            {"t": trigger, "p": document},
        ).scalar_one()
    )


def process(session: Session, settings: Settings, event_id: int) -> Processed:
    """Enforce every rule of the event's trigger whose criteria match, once per rule.

    Runs in the caller's transaction; each enforcement is a savepoint, so a refused one
    (line full, bad parameters, unknown action) is recorded as ``rejected`` with its reason
    and the others still happen. Re-processing finds the enforcements already there.
    """
    event = session.execute(
        text("SELECT id, trigger, payload FROM events WHERE id = :id FOR UPDATE"),
        {"id": event_id},
    ).one_or_none()
    if event is None:
        raise NotFound(f"no event with id {event_id}")
    document = {"id": event.id, "trigger": event.trigger, "payload": event.payload}
    rules = session.execute(
        text("""
            SELECT r.id, r.ref, r.criteria, r.action_ref, r.parameters, r.priority, r.enabled
            FROM rules r WHERE r.trigger = :trigger
              AND NOT EXISTS (SELECT 1 FROM enforcements f
                              WHERE f.event_id = :event_id AND f.rule_ref = r.ref)
            ORDER BY r.ref
        """),
        {"trigger": event.trigger, "event_id": event_id},
    ).all()
    grants: list[admission.Grant] = []
    done: list[Enforcement] = []
    for rule in rules:
        if not criteria.matches(rule.criteria, document):
            continue
        status, execution_id = "skipped", None
        reason: str | None = "the rule is disabled"
        if rule.enabled:
            try:
                with session.begin_nested():
                    params = templates.render(rule.parameters, {"event": document})
                    enqueued = admission.enqueue(
                        session, settings, rule.action_ref, params, rule.priority
                    )
                status, reason, execution_id = "executed", None, enqueued.execution_id
                grants += enqueued.grants
            except (UsherError, InvalidParameters) as error:
                status, reason = "rejected", f"{type(error).__name__}: {error.message}"
        enforcement_id = session.execute(
            text("""
                INSERT INTO enforcements (event_id, rule_id, rule_ref, status, reason,
                                          execution_id)
                VALUES (:event_id, :rule_id, :rule_ref, :status, :reason, :execution_id)
                RETURNING id
            """),
            {
                "event_id": event_id,
                "rule_id": rule.id,
                "rule_ref": rule.ref,
                "status": status,
                "reason": reason,
                "execution_id": execution_id,
            },
        ).scalar_one()
        done.append(Enforcement(enforcement_id, rule.ref, status, execution_id, reason))
    session.execute(
        text("UPDATE events SET processed_at = clock_timestamp() WHERE id = :id"), {"id": event_id}
    )
    return Processed(done, grants)


def enforcements(session: Session, event_id: int) -> list[dict[str, Any]]:
    rows = session.execute(
        text("""SELECT id, rule_ref AS rule, status, execution_id, reason, created_at
                FROM enforcements WHERE event_id = :id ORDER BY id"""),
        {"id": event_id},
    ).mappings()
    return [queries.iso_row(r) for r in rows]


def processed(session: Session, event_id: int) -> bool:
    row = session.execute(
        text("SELECT processed_at FROM events WHERE id = :id"), {"id": event_id}
    ).one_or_none()
    if row is None:
        raise NotFound(f"no event with id {event_id}")
    return row.processed_at is not None
