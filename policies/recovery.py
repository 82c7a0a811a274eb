"""What the sweeper looks for: lost workers, lost messages, lines with waiting work."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from app import queries
from policies import lines


def expired_leases(session: Session, limit: int = 500) -> list[tuple[int, int]]:
    """(execution_id, attempt) of running executions whose worker stopped renewing the lease."""
    rows = session.execute(
        text("""
            SELECT id, attempt FROM executions
            WHERE status = 'running' AND lease_expires_at < clock_timestamp()
            ORDER BY lease_expires_at LIMIT :limit
        """),
        {"limit": limit},
    ).all()
    return [(r.id, r.attempt) for r in rows]


def unclaimed(session: Session, older_than_s: float, limit: int = 500) -> list[lines.Grant]:
    """Scheduled executions whose message no worker claimed in time: to publish again.

    Marks them republished now, so each is sent again at most once per ``older_than_s``.
    """
    rows = session.execute(
        text("""
            UPDATE executions e SET published_at = clock_timestamp()
            FROM actions a
            WHERE e.id IN (
                SELECT id FROM executions
                WHERE status = 'scheduled'
                  AND published_at < clock_timestamp() - make_interval(secs => :s)
                ORDER BY published_at LIMIT :limit
                FOR UPDATE SKIP LOCKED
            ) AND a.id = e.action_id
            RETURNING e.id, e.attempt, a.ref, a.timeout_s
        """),
        {"s": older_than_s, "limit": limit},
    ).all()
    return [lines.Grant(r.id, r.attempt, r.ref, r.timeout_s) for r in rows]


def lines_to_tend(session: Session) -> list[int]:
    """Lines with work waiting: queued executions (timeouts, raised limits) or due retries."""
    return list(
        session.execute(
            text("""
                SELECT id FROM queues WHERE queue_length > 0
                UNION
                SELECT DISTINCT queue_id FROM executions
                WHERE status = 'retrying' AND not_before <= clock_timestamp()
            """)
        ).scalars()
    )


def unprocessed_events(session: Session, older_than_s: float, limit: int = 500) -> list[int]:
    """Events stored but not processed in time (their message was lost, or a try failed):
    to publish again. Events that failed for good are not (they wait for a replay), so a
    poison event holds back the recovery of the others only for its few tries."""
    return list(
        session.execute(
            text("""
                SELECT id FROM events
                WHERE processed_at IS NULL AND failed_at IS NULL
                  AND received_at < clock_timestamp() - make_interval(secs => :s)
                ORDER BY id LIMIT :limit
            """),
            {"s": older_than_s, "limit": limit},
        ).scalars()
    )


def action_refs(session: Session) -> list[str]:
    return list(session.execute(text("SELECT ref FROM actions ORDER BY ref")).scalars())


SAMPLE_EVERY_S = 15
SAMPLES_KEPT_H = 24


def sample_lines(session: Session) -> int:
    """Record each action's depth, active count and oldest wait for the dashboard's charts,
    at most once per SAMPLE_EVERY_S whichever sweeper runs; drop samples past a day."""
    # Each line's oldest waiting execution is one index probe per priority (queries.py);
    # reading all of an action's waiting executions took ~1.2 s per round at 1,000 actions.
    # The planner prices those probes far above jit_above_cost: compiling took ~300 ms more.
    session.execute(text("SET LOCAL jit = off"))
    taken = session.execute(
        text(f"""
            INSERT INTO queue_samples (action_id, sampled_at, queue_length, active_count,
                                       oldest_wait_s, completed)
            SELECT a.id, now(), coalesce(sum(q.queue_length), 0), coalesce(sum(q.active_count), 0),
                   extract(epoch FROM now() - min(oldest.oldest_enqueued_at)),
                   coalesce(sum(q.total_completed), 0)
            FROM actions a LEFT JOIN queues q ON q.action_id = a.id
            {queries.OLDEST_QUEUED}
            WHERE NOT EXISTS (
                SELECT 1 FROM queue_samples s
                WHERE s.sampled_at > now() - make_interval(secs => :every))
            GROUP BY a.id
            RETURNING id
        """),
        {"every": SAMPLE_EVERY_S},
    ).all()
    if taken:
        session.execute(
            text("DELETE FROM queue_samples WHERE sampled_at < now() - make_interval(hours => :h)"),
            {"h": SAMPLES_KEPT_H},
        )
    return len(taken)


def running_on(session: Session, node: str) -> list[tuple[int, int]]:
    """(execution_id, attempt) of the executions a worker node is running now."""
    rows = session.execute(
        text("""SELECT id, attempt FROM executions
                WHERE status = 'running' AND worker LIKE :prefix ORDER BY id"""),
        {"prefix": node.replace("%", r"\%").replace("_", r"\_") + "/%"},
    ).all()
    return [(r.id, r.attempt) for r in rows]
