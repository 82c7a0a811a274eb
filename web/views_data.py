"""Read queries for the dashboard: every list is one page (LIMIT + keyset), never a table.

Lines, waiting rows and events are read through indexes that bound the work by the page
size, so a page costs the same at a thousand executions and at millions. The statements are
``app/sql/web.sql``'s ``dashboard_*``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from app import queries, sql


def lines(
    session: Session,
    search: str = "",
    after: tuple[str, str] | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """One page of lines (an action, or one partition of it) ordered by (ref, partition);
    ``after`` is the last (ref, partition) of the previous page."""
    rows = session.execute(
        sql.query("dashboard_lines"),
        {
            "search": search,
            "after_ref": after[0] if after else None,
            "after_key": after[1] if after else "",
            "limit": limit,
        },
    ).mappings()
    return [dict(r) for r in rows]


def action_lines(
    session: Session,
    action_id: int,
    after: str | None = None,
    limit: int = 100,
    key: str | None = None,
) -> list[dict[str, Any]]:
    """One page of an action's lines by partition (one line when it is not partitioned);
    ``key`` picks the one line of that partition."""
    rows = session.execute(
        sql.query("dashboard_action_lines"),
        {"action_id": action_id, "after": after, "limit": limit, "key": key},
    ).mappings()
    return [dict(r) for r in rows]


def action_totals(session: Session, action_id: int) -> dict[str, Any]:
    """The action's counters summed over all its lines (one row per line: cheap)."""
    row = (
        session.execute(sql.query("dashboard_action_totals"), {"action_id": action_id})
        .mappings()
        .one()
    )
    return {k: int(v) for k, v in row.items()}


def summary(session: Session) -> dict[str, int]:
    """Totals over every line, plus the dead-letter queue (a partial index counts it)."""
    row = session.execute(sql.query("dashboard_summary")).mappings().one()
    return {k: int(v) for k, v in row.items()}


def action_id(session: Session, ref: str) -> int:
    found = session.execute(sql.query("dashboard_action_id"), {"ref": ref}).scalar_one_or_none()
    if found is None:
        raise queries.unknown_action(session, ref)
    return int(found)


def waiting(
    session: Session,
    queue_id: int,
    after: tuple[int, int] | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """One page of a line's waiting executions in grant order (priority DESC, seq);
    ``after`` is the (priority, seq) of the previous page's last row."""
    rows = session.execute(
        sql.query("dashboard_waiting"),
        {
            "queue_id": queue_id,
            "priority": after[0] if after else None,
            "seq": after[1] if after else 0,
            "limit": limit,
        },
    ).mappings()
    return [dict(r) for r in rows]


def action_executions(
    session: Session, action_id: int, before: int | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """One page of an action's executions, newest first, on the (action_id, id DESC) index
    (why the statement is written as it is: ``dashboard_action_executions``)."""
    rows = session.execute(
        sql.query("dashboard_action_executions"),
        {"action_id": action_id, "before": before, "limit": limit},
    ).mappings()
    return [dict(r) for r in rows]


def samples(session: Session, action_id: int, window_s: int = 3600) -> list[dict[str, Any]]:
    """The sweeper's samples of one action over the window (at most one per 15 s)."""
    rows = session.execute(
        sql.query("dashboard_samples"), {"action_id": action_id, "window": window_s}
    ).mappings()
    return [dict(r) for r in rows]


def sparklines(
    session: Session, action_ids: Sequence[int], window_s: int = 3600
) -> dict[int, list[tuple[float, int]]]:
    """Queue depth per action over the window, the highest sample of each minute (one row
    per action: the page's 50 actions x 60 minutes stay in Postgres)."""
    rows = session.execute(
        sql.query("dashboard_sparklines"), {"ids": list(action_ids), "window": window_s}
    ).all()
    return {row.action_id: list(zip(row.ages, row.depths, strict=True)) for row in rows}


def throughput(
    session: Session, action_ids: Sequence[int], window_s: int = 300
) -> dict[int, float]:
    """Succeeded executions per minute over the window, per action.

    From the samples' cumulative ``completed`` when they span at least a minute; else from
    the finished_at of the action's latest 1,000 executions (a bounded read).
    """
    ids = list(action_ids)
    sampled = session.execute(
        sql.query("dashboard_throughput_sampled"), {"ids": ids, "window": window_s}
    ).all()
    rates = {
        row.action_id: float(row.done) * 60 / float(row.span)
        for row in sampled
        if row.span is not None and row.span >= 60
    }
    missing = [i for i in ids if i not in rates]
    if missing:
        # The planner prices these bounded reads high enough to JIT-compile them, which takes
        # longer than reading them (hundreds of ms for a page of 50 actions).
        queries.jit_off(session)
        recent = session.execute(
            sql.query("dashboard_throughput_recent"), {"ids": missing, "window": window_s}
        ).all()
        rates.update({row.id: float(row.done) * 60 / window_s for row in recent})
    return rates


def execution_extra(session: Session, execution_id: int) -> dict[str, Any]:
    """What the execution page shows beyond ``queries.execution``: the current attempt's
    own start in line, and the line's key."""
    row = (
        session.execute(sql.query("dashboard_execution_extra"), {"id": execution_id})
        .mappings()
        .one()
    )
    return dict(row)


def events(session: Session, limit: int = 50, before: int | None = None) -> list[dict[str, Any]]:
    """One page of events, newest first; ``before`` is the previous page's last id."""
    rows = session.execute(
        sql.query("dashboard_events"), {"before": before, "limit": limit}
    ).mappings()
    return [dict(r) for r in rows]


def enforcements(session: Session, event_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """The enforcements of a page of events (their unique key leads with event_id)."""
    rows = session.execute(sql.query("dashboard_enforcements"), {"ids": list(event_ids)}).mappings()
    found: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        found.setdefault(row["event_id"], []).append(dict(row))
    return found


def schedule_fires(session: Session) -> dict[str, dict[str, Any]]:
    """Each schedule's latest fired tick by ref: its event and, for an action schedule, the
    enforcement and the execution it made (one index probe per schedule)."""
    rows = session.execute(sql.query("dashboard_schedule_fires")).mappings()
    return {row["ref"]: dict(row) for row in rows}
