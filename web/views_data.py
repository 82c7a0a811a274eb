"""Read queries for the dashboard: every list is one page (LIMIT + keyset), never a table.

Lines, waiting rows and events are read through indexes that bound the work by the page
size, so a page costs the same at a thousand executions and at millions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from app import queries
from app.errors import UnknownAction

LINE_FIELDS = """
    a.id AS action_id, a.ref AS action_ref, coalesce(q.partition_key, '') AS partition,
    q.id AS queue_id, coalesce(q.queue_length, 0) AS queue_length,
    coalesce(q.active_count, 0) AS active_count, coalesce(q.total_enqueued, 0) AS total_enqueued,
    coalesce(q.total_completed, 0) AS total_completed,
    coalesce(q.total_failed, 0) AS total_failed,
    coalesce(q.total_cancelled, 0) AS total_cancelled,
    coalesce(q.total_expired, 0) AS total_expired, q.last_updated,
    oldest.oldest_enqueued_at,
    extract(epoch FROM clock_timestamp() - oldest.oldest_enqueued_at) AS oldest_wait_s,
    a.policy AS action_policy, p.policy AS pack_policy
"""


def lines(
    session: Session,
    search: str = "",
    after: tuple[str, str] | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """One page of lines (an action, or one partition of it) ordered by (ref, partition);
    ``after`` is the last (ref, partition) of the previous page."""
    rows = session.execute(
        text(f"""
            SELECT {LINE_FIELDS}
            FROM actions a JOIN packs p ON p.id = a.pack_id
            LEFT JOIN queues q ON q.action_id = a.id
            {queries.OLDEST_QUEUED}
            WHERE (:search = '' OR strpos(lower(a.ref), lower(:search)) > 0)
              AND (CAST(:after_ref AS text) IS NULL
                   OR (a.ref, coalesce(q.partition_key, '')) > (:after_ref, :after_key))
            ORDER BY a.ref, coalesce(q.partition_key, '')
            LIMIT :limit
        """),
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
        text(f"""
            SELECT {LINE_FIELDS}
            FROM actions a JOIN packs p ON p.id = a.pack_id
            LEFT JOIN queues q ON q.action_id = a.id
            {queries.OLDEST_QUEUED}
            WHERE a.id = :action_id
              AND (CAST(:after AS text) IS NULL OR coalesce(q.partition_key, '') > :after)
              AND (CAST(:key AS text) IS NULL OR coalesce(q.partition_key, '') = :key)
            ORDER BY coalesce(q.partition_key, '') LIMIT :limit
        """),
        {"action_id": action_id, "after": after, "limit": limit, "key": key},
    ).mappings()
    return [dict(r) for r in rows]


def action_totals(session: Session, action_id: int) -> dict[str, Any]:
    """The action's counters summed over all its lines (one row per line: cheap)."""
    row = (
        session.execute(
            text("""
            SELECT count(q.id) AS lines,
                   coalesce(sum(q.queue_length), 0) AS queue_length,
                   coalesce(sum(q.active_count), 0) AS active_count,
                   coalesce(sum(q.total_enqueued), 0) AS total_enqueued,
                   coalesce(sum(q.total_completed), 0) AS total_completed,
                   coalesce(sum(q.total_failed), 0) AS total_failed,
                   coalesce(sum(q.total_cancelled), 0) AS total_cancelled,
                   coalesce(sum(q.total_expired), 0) AS total_expired
            FROM queues q WHERE q.action_id = :action_id
        """),
            {"action_id": action_id},
        )
        .mappings()
        .one()
    )
    return {k: int(v) for k, v in row.items()}


def summary(session: Session) -> dict[str, int]:
    """Totals over every line, plus the dead-letter queue (a partial index counts it)."""
    row = (
        session.execute(
            text("""
            SELECT (SELECT count(*) FROM actions) AS actions,
                   (SELECT count(*) FROM queues) AS lines,
                   (SELECT coalesce(sum(queue_length), 0) FROM queues) AS queued,
                   (SELECT coalesce(sum(active_count), 0) FROM queues) AS active,
                   (SELECT count(*) FROM executions e
                    WHERE e.status = 'dead' AND e.dlq_cleared_at IS NULL) AS dlq
        """)
        )
        .mappings()
        .one()
    )
    return {k: int(v) for k, v in row.items()}


def action_id(session: Session, ref: str) -> int:
    found = session.execute(
        text("SELECT id FROM actions WHERE ref = :ref"), {"ref": ref}
    ).scalar_one_or_none()
    if found is None:
        raise UnknownAction(f"no action named {ref!r}")
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
        text(f"""
            SELECT id, priority, seq, attempt, {queries.capped_json("parameters", "parameters")},
                   enqueued_at, queued_at,
                   extract(epoch FROM clock_timestamp() - coalesce(queued_at, enqueued_at))
                       AS waited_s
            FROM executions
            WHERE queue_id = :queue_id AND status = 'queued'
              AND (CAST(:priority AS integer) IS NULL OR priority < :priority
                   OR (priority = :priority AND seq > :seq))
            ORDER BY priority DESC, seq LIMIT :limit
        """),
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
    """One page of an action's executions, newest first.

    The LATERAL makes the action id a run-time parameter, so Postgres walks the
    (action_id, id DESC) index; with a literal id it may walk the whole primary key
    backwards when the action's executions are all old.
    """
    rows = session.execute(
        text(f"""
            SELECT e.id, e.status, e.priority, e.seq, e.attempt,
                   {queries.capped_json("e.parameters", "parameters")}, e.enqueued_at,
                   e.started_at, e.finished_at, e.worker, {queries.capped_text("e.error", "error")},
                   q.partition_key
            FROM actions a CROSS JOIN LATERAL (
                SELECT * FROM executions x
                WHERE x.action_id = a.id AND (CAST(:before AS bigint) IS NULL OR x.id < :before)
                ORDER BY x.id DESC LIMIT :limit
            ) e JOIN queues q ON q.id = e.queue_id
            WHERE a.id = :action_id
            ORDER BY e.id DESC
        """),
        {"action_id": action_id, "before": before, "limit": limit},
    ).mappings()
    return [dict(r) for r in rows]


def samples(session: Session, action_id: int, window_s: int = 3600) -> list[dict[str, Any]]:
    """The sweeper's samples of one action over the window (at most one per 15 s)."""
    rows = session.execute(
        text("""
            SELECT extract(epoch FROM sampled_at - now()) AS age_s,
                   queue_length, active_count, oldest_wait_s
            FROM queue_samples
            WHERE action_id = :action_id
              AND sampled_at > now() - make_interval(secs => :window)
            ORDER BY sampled_at
        """),
        {"action_id": action_id, "window": window_s},
    ).mappings()
    return [dict(r) for r in rows]


def sparklines(
    session: Session, action_ids: Sequence[int], window_s: int = 3600
) -> dict[int, list[tuple[float, int]]]:
    """Queue depth per action over the window, the highest sample of each minute (one row
    per action: the page's 50 actions x 60 minutes stay in Postgres)."""
    rows = session.execute(
        text("""
            SELECT action_id, array_agg(age_s ORDER BY at) AS ages,
                   array_agg(depth ORDER BY at) AS depths
            FROM (
                SELECT action_id, max(sampled_at) AS at, max(queue_length) AS depth,
                       CAST(extract(epoch FROM max(sampled_at) - now()) AS float8) AS age_s
                FROM queue_samples
                WHERE action_id = ANY(:ids)
                  AND sampled_at > now() - make_interval(secs => :window)
                GROUP BY action_id, date_trunc('minute', sampled_at)
            ) minutes
            GROUP BY action_id
        """),
        {"ids": list(action_ids), "window": window_s},
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
        text("""
            SELECT action_id, max(completed) - min(completed) AS done,
                   extract(epoch FROM max(sampled_at) - min(sampled_at)) AS span
            FROM queue_samples
            WHERE action_id = ANY(:ids) AND sampled_at > now() - make_interval(secs => :window)
            GROUP BY action_id
        """),
        {"ids": ids, "window": window_s},
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
        session.execute(text("SET LOCAL jit = off"))
        recent = session.execute(
            text("""
                SELECT a.id, (
                    SELECT count(*) FROM (
                        SELECT status, finished_at FROM executions
                        WHERE action_id = a.id ORDER BY id DESC LIMIT 1000
                    ) r
                    WHERE r.status = 'succeeded'
                      AND r.finished_at > clock_timestamp() - make_interval(secs => :window)
                ) AS done
                FROM unnest(CAST(:ids AS integer[])) AS a(id)
            """),
            {"ids": missing, "window": window_s},
        ).all()
        rates.update({row.id: float(row.done) * 60 / window_s for row in recent})
    return rates


def execution_extra(session: Session, execution_id: int) -> dict[str, Any]:
    """What the execution page shows beyond ``queries.execution``: the current attempt's
    own start in line, and the line's key."""
    row = (
        session.execute(
            text("""
            SELECT e.queued_at, e.not_before, e.holds_slot, e.lease_expires_at,
                   e.dlq_cleared_at, q.partition_key
            FROM executions e JOIN queues q ON q.id = e.queue_id WHERE e.id = :id
        """),
            {"id": execution_id},
        )
        .mappings()
        .one()
    )
    return dict(row)


def events(session: Session, limit: int = 50, before: int | None = None) -> list[dict[str, Any]]:
    """One page of events, newest first; ``before`` is the previous page's last id."""
    rows = session.execute(
        text(f"""
            SELECT id, trigger, {queries.capped_json("payload", "payload")}, received_at,
                   processed_at, failed_at, failures, {queries.capped_text("error", "error")}
            FROM events
            WHERE CAST(:before AS bigint) IS NULL OR id < :before
            ORDER BY id DESC LIMIT :limit
        """),
        {"before": before, "limit": limit},
    ).mappings()
    return [dict(r) for r in rows]


def enforcements(session: Session, event_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """The enforcements of a page of events (their unique key leads with event_id)."""
    rows = session.execute(
        text("""
            SELECT f.event_id, f.id, f.rule_ref, f.status, f.reason, f.execution_id,
                   e.status AS execution_status
            FROM enforcements f LEFT JOIN executions e ON e.id = f.execution_id
            WHERE f.event_id = ANY(:ids) ORDER BY f.event_id, f.id
        """),
        {"ids": list(event_ids)},
    ).mappings()
    found: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        found.setdefault(row["event_id"], []).append(dict(row))
    return found
