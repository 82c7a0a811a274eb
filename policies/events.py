"""Events in, enforcements out: match enabled rules and enqueue through bulk intake."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.orm import Session

from app import queries, sql
from app.config import Settings
from app.errors import (
    AlreadyFinished,
    InvalidParameters,
    InvalidRequest,
    NotFound,
    TooLarge,
    UsherError,
)
from policies import busy, criteria, intake, lines, parameters, requests, templates


@dataclass(frozen=True)
class Enforcement:
    id: int
    rule: str
    status: str
    execution_id: int | None
    reason: str | None
    event_id: int | None = None


@dataclass(frozen=True)
class Processed:
    """The enforcements made, and what their intake leaves to do after commit
    (``app.celery.after_intake``)."""

    enforcements: list[Enforcement]
    grants: list[lines.Grant]
    stopped: tuple[busy.Stopped, ...] = ()
    events: tuple[int, ...] = ()

    @classmethod
    def of(cls, enforcements: list[Enforcement], taken: intake.Intake | None) -> Processed:
        if taken is None:
            return cls(enforcements, [])
        return cls(enforcements, taken.grants, tuple(taken.stopped), taken.events)


# The default cap of an event's payload (USHER_MAX_PAYLOAD_BYTES).
MAX_PAYLOAD_BYTES = 256 * 1024


def document(trigger: Any, payload: Any, max_bytes: int = MAX_PAYLOAD_BYTES) -> str:
    """The payload as stored (JSON text), or InvalidRequest naming what is wrong. The
    trigger is checked by the API's own request model; the payload's bounds here."""
    requests.parse(requests.Event, {"trigger": trigger})
    if parameters.depth(payload) > parameters.MAX_DEPTH:
        raise InvalidRequest(f"'payload' is nested deeper than {parameters.MAX_DEPTH} levels")
    try:
        document = json.dumps(payload if payload is not None else {}, allow_nan=False)
    except ValueError:
        raise InvalidRequest("'payload' must be JSON without NaN or Infinity") from None
    if "\\u0000" in document:
        raise InvalidRequest("'payload' must not contain NUL characters")
    if len(document) > max_bytes:
        raise TooLarge(
            f"'payload' is {len(document):,} bytes of JSON; at most {max_bytes:,} are allowed "
            "(USHER_MAX_PAYLOAD_BYTES)"
        )
    return document


def store(session: Session, trigger: Any, payload: Any, max_bytes: int = MAX_PAYLOAD_BYTES) -> int:
    return store_document(session, trigger, document(trigger, payload, max_bytes))


def store_document(session: Session, trigger: str, checked: str) -> int:
    """Store an event whose payload ``document`` checked (its JSON text)."""
    return int(session.execute(sql.query("store_event"), {"t": trigger, "p": checked}).scalar_one())


def store_many(
    session: Session, items: Sequence[Any], max_bytes: int = MAX_PAYLOAD_BYTES
) -> list[int]:
    """Store every event or none (InvalidRequest naming the first bad one); ids in order."""
    rows = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidRequest(f"events[{index}] must be an object {{trigger, payload}}")
        try:
            checked = document(item.get("trigger"), item.get("payload", {}), max_bytes)
        except UsherError as error:
            raise type(error)(f"events[{index}]: {error.message}") from None
        rows.append(f'{{"t": {json.dumps(item["trigger"])}, "p": {checked}}}')
    ids = session.execute(sql.query("store_events"), {"rows": f"[{','.join(rows)}]"}).scalar_one()
    return [int(i) for i in ids]


def process(session: Session, settings: Settings, event_id: int) -> Processed:
    """Enforce every rule of the event's trigger whose criteria match, once per rule."""
    processed = process_many(session, settings, [event_id])
    if processed is None:
        state(session, event_id)  # NotFound for an unknown event; else another try holds it
        return Processed([], [])
    return processed


def process_many(
    session: Session, settings: Settings, event_ids: Sequence[int]
) -> Processed | None:
    """Enforce the matching rules of every event, once per (event, rule); None if none exists.

    Runs in the caller's transaction. The events are locked in id order; one another
    processor holds (a duplicate message, a republished one) is skipped, not waited for: that
    processor enforces it, or leaves it unprocessed for the sweeper. A wait would hold this
    try past its time limit and count it as a failure of a healthy event.
    Each enforcement is all-or-nothing on its own: a refused one (line full, bad parameters,
    unknown action) is recorded as ``rejected`` with its reason and the others still happen.
    Executions are enqueued through ``intake.enqueue_many``: one statement per step for the
    whole batch, seq in (event id, rule ref) order.
    """
    found = session.execute(sql.query("lock_events"), {"ids": list(event_ids)}).all()
    if not found:
        return None
    ids = [e.id for e in found]
    rules: dict[str, list[Any]] = {}
    # The rules are locked before any line (rules_of_triggers says why).
    for rule in session.execute(
        sql.query("rules_of_triggers"), {"triggers": sorted({e.trigger for e in found})}
    ):
        rules.setdefault(rule.trigger, []).append(rule)
    done = {
        (r.event_id, r.rule_ref) for r in session.execute(sql.query("enforced_rules"), {"ids": ids})
    }
    # (event_id, rule, status, reason, index of the request in `requests`)
    planned: list[tuple[int, Any, str, str | None, int | None]] = []
    requests: list[intake.Request] = []
    for event in found:
        document = {"id": event.id, "trigger": event.trigger, "payload": event.payload}
        for rule in rules.get(event.trigger, []):
            if (event.id, rule.ref) in done or not criteria.matches(rule.criteria, document):
                continue
            refused = _refused(settings, event, rule)
            if refused is not None:
                planned.append((event.id, rule, *refused, None))
                continue
            try:
                params = templates.render(rule.parameters, {"event": document})
                request = intake.fields(
                    {"action": rule.action_ref, "parameters": params, "priority": rule.priority}
                )
            except (UsherError, InvalidParameters) as error:
                planned.append((event.id, rule, "rejected", refusal(error), None))
                continue
            planned.append((event.id, rule, "executed", None, len(requests)))
            requests.append(replace(request, requested_by=f"rule:{rule.ref}"))
    intake_result = intake.enqueue_many(session, settings, requests) if requests else None
    rows = []
    for event_id, rule, status, reason, index in planned:
        execution_id = None
        if intake_result is not None and index is not None:
            item = intake_result[index]
            status, reason = outcome(item, status, reason)
            execution_id = item.execution_id
        rows.append(
            {
                "e": event_id,
                "r": rule.id,
                "f": rule.ref,
                "s": status,
                "w": reason,
                "x": execution_id,
            }
        )
    enforced = record(session, rows)
    session.execute(sql.query("mark_events_processed"), {"ids": ids})
    return Processed.of(enforced, intake_result)


def _refused(settings: Settings, event: Any, rule: Any) -> tuple[str, str] | None:
    """(status, reason) of a matching rule that is not enforced: a disabled rule, or an
    event of a chain already past USHER_MAX_CHAIN_DEPTH steps (a rule that re-triggers its
    own action stops there)."""
    if not rule.enabled:
        return "skipped", "the rule is disabled"
    if event.depth > settings.max_chain_depth:
        return "rejected", (
            f"ChainTooDeep: this {event.trigger} event is step {event.depth} of a chain, past "
            f"USHER_MAX_CHAIN_DEPTH ({settings.max_chain_depth})"
        )
    return None


def refusal(error: UsherError) -> str:
    """An enforcement's reason for a refused request: the error's kind and message."""
    return f"{type(error).__name__}: {error.message}"


def outcome(item: intake.ItemResult, status: str, reason: str | None) -> tuple[str, str | None]:
    """An enforcement's (status, reason) once its request was taken: ``rejected`` with the
    refusal, or ``executed``, coalesced into an equal waiting execution if it was."""
    if item.error is not None:
        return "rejected", refusal(item.error)
    if item.coalesced:
        return status, (
            f"coalesced: execution {item.execution_id} waits with equal parameters "
            "(coalesce: true); nothing new was created"
        )
    return status, reason


def record(session: Session, rows: list[dict[str, Any]]) -> list[Enforcement]:
    """Insert the enforcements with one statement, in order."""
    if not rows:
        return []
    inserted = session.execute(sql.query("record_enforcements"), {"rows": json.dumps(rows)}).all()
    by_key = {(r.event_id, r.rule_ref): r.id for r in inserted}
    return [
        Enforcement(by_key[(r["e"], r["f"])], r["f"], r["s"], r["x"], r["w"], r["e"]) for r in rows
    ]


def enforcements(session: Session, event_id: int) -> list[dict[str, Any]]:
    rows = session.execute(sql.query("enforcements_of_event"), {"id": event_id}).mappings()
    return [queries.iso_row(r) for r in rows]


def record_failure(
    session: Session, settings: Settings, event_ids: Sequence[int], error: str
) -> list[int]:
    """Count a try of these events that did not finish; those that have failed
    USHER_EVENT_MAX_FAILURES times end ``failed`` (kept with the error, replayable) and are
    never published again. Returns the ids that ended so."""
    rows = session.execute(
        sql.query("record_event_failure"),
        {"ids": list(event_ids), "error": error[:2000], "most": settings.event_max_failures},
    ).all()
    return [r.id for r in rows if r.failed]


def replay(session: Session, event_id: int) -> None:
    """Give a failed event its tries back; the caller publishes it after commit."""
    row = session.execute(sql.query("replay_event"), {"id": event_id}).one_or_none()
    if row is None:
        processed(session, event_id)  # NotFound for an unknown event
        raise AlreadyFinished(f"event {event_id} has not failed: only a failed event replays")


def state(session: Session, event_id: int) -> dict[str, Any]:
    """Whether the event was processed, or failed for good (and with what error)."""
    row = session.execute(sql.query("event_state"), {"id": event_id}).one_or_none()
    if row is None:
        raise NotFound(f"no event with id {event_id}")
    return {
        "processed": row.processed_at is not None,
        "failed": row.failed_at is not None,
        "failures": row.failures,
        "error": row.error,
    }


def processed(session: Session, event_id: int) -> bool:
    row = session.execute(sql.query("event_processed_at"), {"id": event_id}).one_or_none()
    if row is None:
        raise NotFound(f"no event with id {event_id}")
    return row.processed_at is not None
