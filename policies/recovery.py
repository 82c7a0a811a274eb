"""What the sweeper looks for: lost workers, lost messages, lines with waiting work."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app import queries, sql
from policies import lines


def expired_leases(session: Session, limit: int = 500) -> list[tuple[int, int]]:
    """(execution_id, attempt) of running executions whose worker stopped renewing the lease."""
    rows = session.execute(sql.query("expired_leases"), {"limit": limit}).all()
    return [(r.id, r.attempt) for r in rows]


def unclaimed(session: Session, older_than_s: float, limit: int = 500) -> list[lines.Grant]:
    """Scheduled executions whose message no worker claimed in time: to publish again.

    Marks them republished now, so each is sent again at most once per ``older_than_s``.
    """
    rows = session.execute(
        sql.query("republish_unclaimed"), {"s": older_than_s, "limit": limit}
    ).all()
    return [lines.Grant(r.id, r.attempt, r.ref, r.timeout_s) for r in rows]


def lines_to_tend(session: Session) -> list[int]:
    """Lines with work waiting: queued executions (timeouts, raised limits) or due retries."""
    return list(session.execute(sql.query("lines_to_tend")).scalars())


def unprocessed_events(session: Session, older_than_s: float, limit: int = 500) -> list[int]:
    """Events stored but not processed in time (their message was lost, or a try failed):
    to publish again. Events that failed for good are not (they wait for a replay), so a
    poison event holds back the recovery of the others only for its few tries."""
    return list(
        session.execute(
            sql.query("unprocessed_events"), {"s": older_than_s, "limit": limit}
        ).scalars()
    )


def action_refs(session: Session) -> list[str]:
    return list(session.execute(sql.query("action_refs")).scalars())


SAMPLE_EVERY_S = 15
SAMPLES_KEPT_H = 24


def sample_lines(session: Session) -> int:
    """Record each action's depth, active count and oldest wait for the dashboard's charts,
    at most once per SAMPLE_EVERY_S whichever sweeper runs; drop samples past a day."""
    queries.jit_off(session)
    taken = session.execute(sql.query("sample_lines"), {"every": SAMPLE_EVERY_S}).all()
    if taken:
        session.execute(sql.query("prune_samples"), {"h": SAMPLES_KEPT_H})
    return len(taken)


def running_on(session: Session, node: str) -> list[tuple[int, int]]:
    """(execution_id, attempt) of the executions a worker node is running now."""
    rows = session.execute(
        sql.query("running_on"),
        {"prefix": node.replace("%", r"\%").replace("_", r"\_") + "/%"},
    ).all()
    return [(r.id, r.attempt) for r in rows]
