"""Read models shared by the CLI, the API and the dashboard (statements: app/sql/reads.sql)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app import models, search, sql
from app.errors import UnknownAction, UnknownExecution

# A list shows a value of at most this many bytes of JSON text; a bigger one stays in Postgres
# and the list says how big it is (``queries.execution`` shows it whole). The cut itself is
# made by the SQL functions usher_capped_json and usher_capped_text (migration 0008).
LIST_VALUE_BYTES = 4096


def iso_row(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A row as JSON-ready values: datetimes as ISO 8601 strings."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def unknown_action(session: Session, ref: object, refs: list[str] | None = None) -> UnknownAction:
    """The refusal of a request for an action that does not exist, naming the close ones
    (``refs``: every action's ref, when the caller has them already)."""
    if refs is None:
        refs = list(session.execute(sql.query("action_refs")).scalars())
    close = difflib.get_close_matches(str(ref), refs, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see `usher packs load`"
    return UnknownAction(f"no action named {ref!r}; {hint}")


def action_row(session: Session, ref: str) -> dict[str, Any]:
    row = session.execute(sql.query("action_by_ref"), {"ref": ref}).mappings().one_or_none()
    if row is None:
        raise unknown_action(session, ref)
    return dict(row)


def actions(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(sql.query("actions_by_ref")).mappings()
    return [dict(r) for r in rows]


def jit_off(session: Session) -> None:
    """No JIT compiling for the rest of the transaction (the caller says why)."""
    session.execute(sql.query("jit_off_for_transaction"))


def queue_rows(session: Session, ref: str | None = None) -> list[dict[str, Any]]:
    """One row per line (action, partition); actions never used yet show an empty line; no
    row at all for an unknown ``ref``."""
    if ref is None:
        # Every line. When the oldest-waiting probes (a recursive CTE per line) were a LATERAL
        # here, the planner priced them far above jit_above_cost: compiling took ~300 ms at
        # 1,000 lines, running ~30 ms. usher_oldest_queued is priced as a function call and
        # not compiled (measured); JIT stays off all the same, as it was.
        jit_off(session)
        rows = session.execute(sql.query("line_stats")).mappings()
    else:
        rows = session.execute(sql.query("line_stats_of_action"), {"ref": ref}).mappings()
    result = []
    for r in rows:
        row = dict(r)
        for key in models.COUNTERS:
            row[key] = row[key] or 0
        row["partition_key"] = row["partition_key"] or ""
        result.append(row)
    return result


def execution(session: Session, execution_id: int) -> dict[str, Any]:
    row = (
        session.execute(sql.query("execution_by_id"), {"id": execution_id}).mappings().one_or_none()
    )
    if row is None:
        raise UnknownExecution(f"no execution with id {execution_id}")
    found = iso_row(dict(row))
    found["attempts"] = [
        iso_row(dict(r))
        for r in session.execute(
            sql.query("attempts_of_execution"), {"id": execution_id}
        ).mappings()
    ]
    return found


def executions(
    session: Session,
    action: str | None = None,
    status: str | None = None,
    limit: int = 50,
    before: int | None = None,
    params: dict[str, str] | None = None,
    requested_by: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    rule: str | None = None,
) -> list[dict[str, Any]]:
    """Newest first; ``before`` is the cursor (an id) for the next page. Big parameters,
    results and errors are shown truncated (``LIST_VALUE_BYTES``). A filter not given costs
    nothing: the planner walks the index of those given (``executions_newest_first``).
    ``params`` match as ``app.search`` says; ``since <= enqueued_at < until``; ``rule`` is
    the requester ``rule:<ref>``."""
    if rule is not None:
        if requested_by not in (None, f"rule:{rule}"):
            return []  # two requesters: nothing was asked for by both
        requested_by = f"rule:{rule}"
    rows = session.execute(
        sql.query("executions_newest_first"),
        {
            "action": action,
            "status": status,
            "before": before,
            "limit": limit,
            "match": search.match(params or {}),
            "requester": requested_by,
            "since": since,
            "until": until,
        },
    ).mappings()
    return [iso_row(dict(r)) for r in rows]


def event_state(event: Mapping[str, Any]) -> str:
    """``processed``, ``failed`` (for good: replayable) or ``pending`` (not processed yet)."""
    if event["processed_at"] is not None:
        return "processed"
    return "failed" if event["failed_at"] is not None else "pending"


def events(
    session: Session, trigger: str | None = None, limit: int = 50, before: int | None = None
) -> tuple[list[dict[str, Any]], int | None]:
    """A page of events, newest first, each with its enforcements and state; and the cursor
    of the next page (None: this is the last). Big payloads and errors are shown truncated
    (``LIST_VALUE_BYTES``); the trigger, when given, matches exactly."""
    rows = [
        iso_row(r)
        for r in session.execute(
            sql.query("events_newest_first"),
            {"trigger": trigger, "before": before, "limit": limit + 1},
        ).mappings()
    ]
    following = rows[limit - 1]["id"] if len(rows) > limit else None
    page = rows[:limit]
    found: dict[int, list[dict[str, Any]]] = {row["id"]: [] for row in page}
    if page:
        for r in session.execute(
            sql.query("enforcements_of_events"), {"ids": list(found)}
        ).mappings():
            enforcement = iso_row(r)
            found[enforcement.pop("event_id")].append(enforcement)
    for row in page:
        row["state"] = event_state(row)
        row["enforcements"] = found[row["id"]]
    return page, following
