"""Read models shared by the CLI, the API and the dashboard."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from app import models
from app.errors import UnknownAction, UnknownExecution

EXECUTION_FROM = """
    executions e JOIN actions a ON a.id = e.action_id JOIN queues q ON q.id = e.queue_id
"""
EXECUTION_FIELDS = """
    e.id, a.ref AS action_ref, e.status, e.parameters, e.priority, e.seq, e.attempt,
    e.enqueued_at, e.scheduled_at, e.started_at, e.finished_at, e.worker, e.result, e.error,
    q.partition_key, e.not_before, e.replay_of
"""
# A line's oldest waiting execution is its lowest seq (seq is taken under the line's lock,
# with enqueued_at read under the same lock, so both grow together). The waiting index is
# (queue_id, priority DESC, seq): one probe per distinct priority finds it, where
# min(enqueued_at) would read every waiting row of the line. Join it after ``queues q``.
OLDEST_QUEUED = """
    LEFT JOIN LATERAL (
        WITH RECURSIVE prios(p) AS (
            (SELECT priority FROM executions
             WHERE queue_id = q.id AND status = 'queued' ORDER BY priority DESC LIMIT 1)
            UNION ALL
            SELECT (SELECT priority FROM executions
                    WHERE queue_id = q.id AND status = 'queued' AND priority < prios.p
                    ORDER BY priority DESC LIMIT 1)
            FROM prios WHERE prios.p IS NOT NULL
        )
        SELECT min(w.enqueued_at) AS oldest_enqueued_at FROM prios
        CROSS JOIN LATERAL (
            SELECT enqueued_at FROM executions
            WHERE queue_id = q.id AND status = 'queued' AND priority = prios.p
            ORDER BY seq LIMIT 1
        ) w
    ) oldest ON true
"""
# A list shows a value of at most this many bytes of JSON text; a bigger one stays in Postgres
# and the list says how big it is (``queries.execution`` shows it whole).
LIST_VALUE_BYTES = 4096


def capped_json(column: str, name: str) -> str:
    """SQL for ``column`` (jsonb) in a list: ``{"_truncated": true, "bytes": N}`` when big."""
    return f"""CASE WHEN octet_length({column}::text) > {LIST_VALUE_BYTES}
        THEN jsonb_build_object('_truncated', true, 'bytes', octet_length({column}::text))
        ELSE {column} END AS {name}"""


def capped_text(column: str, name: str) -> str:
    """SQL for ``column`` (text) in a list: its start and its size in bytes when big."""
    return f"""CASE WHEN octet_length({column}) > {LIST_VALUE_BYTES}
        THEN left({column}, 1000) || '… (truncated: ' || octet_length({column}) || ' bytes)'
        ELSE {column} END AS {name}"""


LIST_FIELDS = f"""
    e.id, a.ref AS action_ref, e.status, {capped_json("e.parameters", "parameters")},
    e.priority, e.seq, e.attempt, e.enqueued_at, e.scheduled_at, e.started_at, e.finished_at,
    e.worker, {capped_json("e.result", "result")}, {capped_text("e.error", "error")},
    q.partition_key, e.not_before, e.replay_of
"""
STATS_FIELDS = """
    a.ref AS action_ref, q.partition_key, q.queue_length, q.active_count, q.total_enqueued,
    q.total_completed, q.total_failed, q.total_cancelled, q.total_expired, q.last_updated,
    oldest.oldest_enqueued_at
"""


def iso_row(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A row as JSON-ready values: datetimes as ISO 8601 strings."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def action_row(session: Session, ref: str) -> dict[str, Any]:
    row = (
        session.execute(
            text("""
            SELECT a.ref, a.name, p.name AS pack, a.description, a.runner, a.timeout_s,
                   a.parameters_schema AS parameters, a.policy, p.policy AS pack_policy,
                   a.paused_at IS NOT NULL AS paused
            FROM actions a JOIN packs p ON p.id = a.pack_id WHERE a.ref = :ref
        """),
            {"ref": ref},
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise UnknownAction(f"no action named {ref!r}")
    return dict(row)


def actions(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(
        text("""
            SELECT a.ref, a.name, p.name AS pack, a.description, a.runner, a.timeout_s,
                   a.policy, p.policy AS pack_policy
            FROM actions a JOIN packs p ON p.id = a.pack_id ORDER BY a.ref
        """)
    ).mappings()
    return [dict(r) for r in rows]


def queue_rows(session: Session, ref: str | None = None) -> list[dict[str, Any]]:
    """One row per line (action, partition); actions never used yet show an empty line; no
    row at all for an unknown ``ref``."""
    if ref is None:
        # Every line: the planner prices the oldest-waiting probes (a recursive CTE per line)
        # far above jit_above_cost; compiling takes ~300 ms at 1,000 lines, running ~30 ms.
        session.execute(text("SET LOCAL jit = off"))
    rows = session.execute(
        text(f"""
            SELECT {STATS_FIELDS}, a.policy AS action_policy, p.policy AS pack_policy
            FROM actions a JOIN packs p ON p.id = a.pack_id
            LEFT JOIN queues q ON q.action_id = a.id
            {OLDEST_QUEUED}
            {"WHERE a.ref = :ref" if ref is not None else ""}
            ORDER BY a.ref, q.partition_key
        """),
        {"ref": ref} if ref is not None else {},
    ).mappings()
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
        session.execute(
            text(f"""
            SELECT {EXECUTION_FIELDS}
            FROM {EXECUTION_FROM}
            WHERE e.id = :id
        """),
            {"id": execution_id},
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise UnknownExecution(f"no execution with id {execution_id}")
    found = iso_row(dict(row))
    found["attempts"] = [
        iso_row(dict(r))
        for r in session.execute(
            text("""
                SELECT attempt, outcome, queued_at, scheduled_at, started_at, finished_at,
                       worker, error
                FROM attempts WHERE execution_id = :id ORDER BY attempt
            """),
            {"id": execution_id},
        ).mappings()
    ]
    return found


def executions(
    session: Session,
    action: str | None = None,
    status: str | None = None,
    limit: int = 50,
    before: int | None = None,
) -> list[dict[str, Any]]:
    """Newest first; ``before`` is the cursor (an id) for the next page. Big parameters,
    results and errors are shown truncated (``LIST_FIELDS``).

    Each filter is written into the statement only when given, so the planner walks the
    matching index ((action_id, id DESC) or (status, id DESC)) instead of the whole table.
    """
    where = ["TRUE"]
    params: dict[str, Any] = {"limit": limit}
    if action is not None:
        where.append("e.action_id = (SELECT id FROM actions WHERE ref = :action)")
        params["action"] = action
    if status is not None:
        where.append("e.status = :status")
        params["status"] = status
    if before is not None:
        where.append("e.id < :before")
        params["before"] = before
    rows = session.execute(
        text(f"""
            SELECT {LIST_FIELDS}
            FROM {EXECUTION_FROM}
            WHERE {" AND ".join(where)}
            ORDER BY e.id DESC LIMIT :limit
        """),
        params,
    ).mappings()
    return [iso_row(dict(r)) for r in rows]
