"""The audit: who did what, one row per mutation, refused ones too.

Every mutating request of the API, the dashboard and the webhooks is recorded by one
``after_request`` hook (``web.audit``): the CLI's too, whose commands are API requests
(over HTTP with ``--url``, else to its own app in-process); each row in its own short
transaction, so a refused request, whose unit of work rolled back, still leaves its record.
A row holds the actor (a token's name, ``webhook:<ref>``, ``cli:<os user>``, ``anonymous``),
the verb (the route's endpoint), the target (the path) and the outcome (the HTTP status and
error code); never a request's body, whose values may be secrets. ``detail`` is small and
bounded (``DETAIL_BYTES``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app import db, queries, sql

log = logging.getLogger(__name__)
TEXT_CHARS = 500  # each of actor, verb, target and outcome, cut there
DETAIL_BYTES = 4096  # the table's check says the same


def _cut(value: str) -> str:
    return value if len(value) <= TEXT_CHARS else value[: TEXT_CHARS - 1] + "…"


def record(
    session: Session,
    actor: str,
    verb: str,
    target: str,
    outcome: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Add one row in the caller's unit of work; a detail too big is dropped, said so."""
    if detail is not None and len(json.dumps(detail, default=str).encode()) > DETAIL_BYTES:
        detail = {"truncated": True}
    session.execute(
        sql.query("audit_record"),
        {
            "actor": _cut(actor),
            "verb": _cut(verb),
            "target": _cut(target),
            "outcome": _cut(outcome),
            "detail": sql.jsonb(detail),
        },
    )


def record_many(session: Session, rows: list[tuple[str, str, str, str, dict[str, Any]]]) -> None:
    """Add the rows (actor, verb, target, outcome, detail) in the caller's unit of work, in
    one statement: a group commit's requests are recorded in the transaction that did them."""
    if not rows:
        return
    found = [
        {
            "actor": _cut(actor),
            "verb": _cut(verb),
            "target": _cut(target),
            "outcome": _cut(outcome),
            "detail": detail if len(json.dumps(detail).encode()) <= DETAIL_BYTES else None,
        }
        for actor, verb, target, outcome, detail in rows
    ]
    session.execute(sql.query("audit_record_many"), {"rows": sql.jsonb(found)})


def record_now(
    engine: Engine,
    actor: str,
    verb: str,
    target: str,
    outcome: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """``record`` in its own transaction. A database that cannot take it is logged, not
    raised: the answer is made already and must still be sent."""
    try:
        with db.unit_of_work(engine) as session:
            record(session, actor, verb, target, outcome, detail)
    except SQLAlchemyError as error:
        log.error("the audit row of %s on %r was not stored: %s", verb, target, error)


def newest(
    session: Session, limit: int = 50, before: int | None = None
) -> tuple[list[dict[str, Any]], int | None]:
    """A page of the audit, newest first, and the cursor of the next (None: the last)."""
    rows = [
        queries.iso_row(r)
        for r in session.execute(
            sql.query("audit_newest_first"), {"before": before, "limit": limit + 1}
        ).mappings()
    ]
    following = rows[limit - 1]["id"] if len(rows) > limit else None
    return rows[:limit], following
