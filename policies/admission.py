"""Enqueue, claim, release, cancel: an execution's way through its line.

Every function takes a session and never commits; the caller owns the transaction and
publishes the returned grants only after it commits. Each takes its line's lock
(``policies.lines``) before it changes an execution row of that line, so cancel, release and
admit serialise per line and never deadlock.

The SQL of admit and release lives in Postgres functions (``app/sql/functions.sql``), so each is one
statement with a cached plan; ``finish`` and ``claim`` are single statements that may run on
an autocommit connection, one round trip each (the workers' hot path).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app import db, sql
from app.config import Settings
from policies import busy, cancels, emitted, intake, lines

# Outcomes whose release needs no retry policy: ``finish`` takes them in one statement.
FINISHES = ("succeeded", "cancelled")
# What an attempt can end with; failures become ``retrying`` or ``dead`` by the retry policy.
OUTCOMES = ("succeeded", "failed", "timed_out", "worker_lost", "cancelled")


@dataclass(frozen=True)
class Enqueued:
    """A new execution (or, coalesced, an equal waiting one's) and what to do after commit
    (``app.celery.after_intake``)."""

    execution_id: int
    seq: int | None  # None while delayed (until run_at)
    grants: list[lines.Grant]
    run_at: datetime | None = None
    coalesced: bool = False
    stopped: tuple[busy.Stopped, ...] = ()
    events: tuple[int, ...] = ()

    @property
    def granted(self) -> bool:
        return any(g.execution_id == self.execution_id for g in self.grants)


@dataclass(frozen=True)
class Claimed:
    execution_id: int
    attempt: int
    action_ref: str
    runner: str
    runner_config: dict[str, Any]
    parameters: dict[str, Any]
    timeout_s: int | None
    parameters_schema: dict[str, Any]


@dataclass(frozen=True)
class Ended:
    """How an attempt ended, as its worker (or the sweeper, or a shutdown) reports it.
    ``transient``: a failure that another attempt may cure (the retry policy decides)."""

    execution_id: int
    attempt: int
    outcome: str
    result: Any = None
    error: str | None = None
    transient: bool = True

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {self.outcome!r}")


@dataclass(frozen=True)
class Released:
    """What a release did: the final status (or ``retrying``), the grants it made, for a
    retry the queue and time at which the line should be woken, and the execution events
    its transaction emitted (to publish after commit)."""

    status: str | None
    grants: list[lines.Grant]
    queue_id: int | None = None
    retry_at: Any = None
    rate_wake_at: Any = None
    events: tuple[int, ...] = ()


Cancelled = cancels.Cancelled


def enqueue(
    session: Session,
    settings: Settings,
    action_ref: str,
    params: Any,
    priority: int = 0,
    replay_of: int | None = None,
    run_at: datetime | None = None,
    delay_s: float | None = None,
    when_busy: str | None = None,
    requested_by: str | None = None,
    rerun_of: int | None = None,
) -> Enqueued:
    """Put a new execution at the tail of its line and admit what fits (or, with a time
    ahead, store it ``delayed`` until then): the batch of one (``intake.enqueue_many``), its
    error raised (QueueFull past the cap, LineBusy for a busy line's skip, UnknownAction,
    InvalidParameters)."""
    taken = intake.enqueue_many(
        session,
        settings,
        [
            intake.Request(
                action_ref,
                params,
                priority,
                replay_of,
                run_at,
                delay_s,
                when_busy,
                requested_by,
                rerun_of,
            )
        ],
    )
    (item,) = taken
    if item.error is not None:
        raise item.error
    assert item.execution_id is not None
    return Enqueued(
        item.execution_id,
        item.seq,
        taken.grants,
        item.run_at,
        item.coalesced,
        tuple(taken.stopped),
        taken.events,
    )


def claim(
    executor: db.Executor, execution_id: int, attempt: int, worker: str, lease_s: float
) -> Claimed | None:
    """scheduled -> running for this attempt only; None when the message is stale or a duplicate.

    Also true when this very process already claimed it: a claim whose reply was lost with
    its connection (``db.Hot.run`` runs it again) must not make the worker skip the
    execution it holds. A process runs one task at a time, so it cannot be a duplicate.
    """
    rows = db.fetch(
        executor,
        sql.raw("claim"),
        {"id": execution_id, "attempt": attempt, "worker": worker, "lease_s": float(lease_s)},
    )
    row = rows[0] if rows else None
    if row is None:
        return None
    return Claimed(
        row.id,
        row.attempt,
        row.ref,
        row.runner,
        row.runner_config,
        row.parameters,
        row.timeout_s,
        row.parameters_schema,
    )


def renew(
    executor: db.Executor, held: list[tuple[int, int]], lease_s: float
) -> set[tuple[int, int]]:
    """Renew the leases of several running attempts in one statement.

    Returns the (execution_id, attempt) pairs still owned; the others were cancelled or
    given away by the sweeper after their lease expired.
    """
    if not held:
        return set()
    rows = db.fetch(
        executor,
        sql.raw("renew"),
        {"ids": [h[0] for h in held], "attempts": [h[1] for h in held], "s": float(lease_s)},
    )
    return {(r.id, r.attempt) for r in rows}


def release(
    session: Session, settings: Settings, ended: Ended, lease_expired: bool = False
) -> Released:
    """End this attempt, record it, and free its slot and grant the next, all at once.

    A failure becomes ``retrying`` (attempt + 1, due at ``not_before``) while the retry
    policy allows and the failure is transient, else ``dead`` (the dead-letter queue).
    Idempotent and fenced: a second signal, a late worker or a stale attempt changes nothing.
    ``lease_expired`` (the sweeper) releases only if no heartbeat renewed the lease since.
    A worker tries ``finish`` first: one statement where no Python policy is needed.
    """
    line = lines.lock_line_of(session, settings, ended.execution_id)
    policy = line.retry
    if ended.outcome in FINISHES:
        status = ended.outcome
    elif ended.transient and policy.allows_retry(ended.attempt):
        status = "retrying"
    else:
        status = "dead"
    hold = status == "retrying" and policy.hold_slot
    delay_s = policy.delay_ms(ended.attempt) / 1000 if status == "retrying" else 0.0
    released = session.execute(
        sql.query("release"),
        {
            "id": ended.execution_id,
            "attempt": ended.attempt,
            "status": status,
            "outcome": ended.outcome,
            "hold": hold,
            "delay_s": delay_s,
            "result": sql.jsonb(ended.result),
            "error": ended.error,
            "lease_expired": lease_expired,
        },
    ).one_or_none()
    if released is None:
        return Released(None, [])
    admitted = lines.Admitted([]) if hold else lines.admit(session, line)
    return Released(
        status,
        admitted.grants,
        released.queue_id,
        released.not_before,
        admitted.wake_at,
        emitted.parse(released.emitted),
    )


def finish(executor: db.Executor, settings: Settings, ended: Ended) -> Released | None:
    """``release`` in one statement for a success or cancel on a line without rate limits.

    Safe on an autocommit connection: the statement is its own transaction, so a worker
    ends an attempt, frees its slot and grants the next execution in one round trip.
    None when the line needs a Python policy: nothing changed, call ``release``.
    """
    if ended.outcome not in FINISHES:
        raise ValueError(f"finish takes one of {FINISHES}, not {ended.outcome!r}")
    (row,) = db.fetch(
        executor,
        sql.raw("finish"),
        {
            "id": ended.execution_id,
            "attempt": ended.attempt,
            "status": ended.outcome,
            "result": sql.jsonb(ended.result),
            "error": ended.error,
            "limit": settings.default_max_concurrent,
        },
    )
    if row.kind == "policy":
        return None
    if row.kind == "stale":
        return Released(None, [])
    grants = [
        lines.Grant(grant_id, grant_attempt, row.action_ref, row.timeout_s)
        for grant_id, grant_attempt in zip(row.grant_ids, row.grant_attempts, strict=True)
    ]
    return Released(ended.outcome, grants, row.queue_id, events=emitted.parse(row.emitted))


def cancel(
    session: Session, settings: Settings, execution_id: int, cancelled_by: str | None = None
) -> Cancelled:
    """Cancel a delayed, queued, scheduled or running execution; a freed slot goes to the next
    in line (``policies.cancels``)."""
    return cancels.cancel(session, settings, execution_id, cancelled_by=cancelled_by)


def positions(session: Session, execution_ids: list[int]) -> dict[int, int]:
    """The 1-based places in line of those still queued, by id, in one statement."""
    if not execution_ids:
        return {}
    rows = session.execute(sql.query("positions"), {"ids": execution_ids}).all()
    return {int(r.id): int(r.place) for r in rows if r.place is not None}


def position(session: Session, execution_id: int) -> int | None:
    """1-based place in the line of a queued execution; None once it left the line."""
    value = session.execute(sql.query("position"), {"id": execution_id}).scalar_one_or_none()
    return None if value is None else int(value)
