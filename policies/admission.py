"""Enqueue, admit, claim, release: the FIFO line and the global concurrency limit.

Every function takes a session and never commits; the caller owns the transaction and
publishes the returned grants only after it commits. The queue row's lock
(``SELECT ... FOR NO KEY UPDATE``) is the semaphore: it is always taken before any execution
row of that line is changed, so cancel, release and admit serialise per line and never
deadlock. Plain ``FOR UPDATE`` would conflict with the KEY SHARE lock an execution INSERT's
foreign key takes. Timestamps are ``clock_timestamp()`` read under the lock, so they follow
lock order and the invariants can be checked from them.

The SQL of admit and release lives in Postgres functions (migration 0006), so each is one
statement with a cached plan; ``finish`` and ``claim`` are single statements that may run on
an autocommit connection, one round trip each (the workers' hot path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from app import db
from app.config import Settings
from app.errors import AlreadyFinished, QueueFull, UnknownAction, UnknownExecution
from policies import limits, parameters, ratelimit, retry

# Outcomes whose release needs no retry policy: ``finish`` takes them in one statement.
FINISHES = ("succeeded", "cancelled")
# What an attempt can end with; failures become ``retrying`` or ``dead`` by the retry policy.
OUTCOMES = ("succeeded", "failed", "timed_out", "worker_lost", "cancelled")


@dataclass(frozen=True)
class Grant:
    """A slot granted to an execution: publish ``execute(execution_id, attempt)`` after commit."""

    execution_id: int
    attempt: int
    action_ref: str
    timeout_s: int | None


@dataclass(frozen=True)
class Line:
    queue_id: int
    action_ref: str
    timeout_s: int | None
    limits: limits.Limits
    retry: retry.RetryPolicy
    paused: bool = False
    # Filled by admit: when a full rate-limit window frees up (the line should be woken).
    notes: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Enqueued:
    execution_id: int
    seq: int
    grants: list[Grant]

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
class Released:
    """What a release did: the final status (or ``retrying``), the grants it made, and for a
    retry the queue and time at which the line should be woken."""

    status: str | None
    grants: list[Grant]
    queue_id: int | None = None
    retry_at: Any = None
    rate_wake_at: Any = None


@dataclass(frozen=True)
class Cancelled:
    previous_status: str
    grants: list[Grant]


_LINE_COLUMNS = """
    q.id AS queue_id, a.ref, a.timeout_s, a.policy AS action_policy, p.policy AS pack_policy,
    a.paused_at IS NOT NULL AS paused
"""


def _line(settings: Settings, row: Any) -> Line:
    return Line(
        queue_id=row.queue_id,
        action_ref=row.ref,
        timeout_s=row.timeout_s,
        limits=limits.resolve(row.action_policy, row.pack_policy, settings),
        retry=retry.resolve(row.action_policy, row.pack_policy, settings),
        paused=row.paused,
    )


def lock_line(session: Session, settings: Settings, queue_id: int) -> Line:
    row = session.execute(
        text(f"""
            SELECT {_LINE_COLUMNS}
            FROM queues q JOIN actions a ON a.id = q.action_id JOIN packs p ON p.id = a.pack_id
            WHERE q.id = :queue_id
            FOR NO KEY UPDATE OF q
        """),
        {"queue_id": queue_id},
    ).one()
    return _line(settings, row)


def lock_line_of(session: Session, settings: Settings, execution_id: int) -> Line:
    row = session.execute(
        text(f"""
            SELECT {_LINE_COLUMNS}
            FROM executions e JOIN queues q ON q.id = e.queue_id
            JOIN actions a ON a.id = q.action_id JOIN packs p ON p.id = a.pack_id
            WHERE e.id = :execution_id
            FOR NO KEY UPDATE OF q
        """),
        {"execution_id": execution_id},
    ).one_or_none()
    if row is None:
        raise UnknownExecution(f"no execution with id {execution_id}")
    return _line(settings, row)


def admit(session: Session, line: Line) -> list[Grant]:
    """Grant free slots to the oldest eligible executions, in (priority DESC, seq ASC) order.

    Eligible: waiting (``queued``), or backing off (``retrying``) and already due, so a due
    retry keeps its place in line even before the sweeper moves it back to ``queued``.
    The caller holds the line's lock, so this statement's snapshot (taken after the lock)
    sees every committed waiting row and the current ``active_count``. A paused line grants
    nothing; its waiting executions keep their places.
    """
    if line.paused:
        return []
    cap: int | None = None
    if line.limits.rate:
        cap, frees_at = ratelimit.capacity(session, line.queue_id, line.limits.rate)
        line.notes["wake_at"] = frees_at
        if cap == 0:
            return []
    rows = session.execute(
        text("SELECT execution_id, attempt FROM usher_admit(:queue_id, :limit, :cap)"),
        {"queue_id": line.queue_id, "limit": line.limits.concurrency, "cap": cap},
    ).all()
    return [Grant(r.execution_id, r.attempt, line.action_ref, line.timeout_s) for r in rows]


def requeue_due(session: Session, line: Line) -> list[Grant]:
    """Move due retries back into the line (the caller holds its lock).

    A retry that kept its slot (``hold_slot``) is granted at once; the others become
    ``queued`` again with their original seq, so they keep their place. Then ``admit``.
    """
    rows = session.execute(
        text("""
            WITH now AS (SELECT clock_timestamp() AS ts),
            due AS (
                UPDATE executions SET
                    status = CASE WHEN holds_slot THEN 'scheduled' ELSE 'queued' END,
                    scheduled_at = CASE WHEN holds_slot THEN (SELECT ts FROM now) END,
                    published_at = CASE WHEN holds_slot THEN (SELECT ts FROM now) END,
                    holds_slot = false
                WHERE queue_id = :queue_id AND status = 'retrying'
                  AND not_before <= (SELECT ts FROM now)
                RETURNING id, attempt, priority, seq, status
            ),
            counted AS (
                UPDATE queues SET
                    queue_length = queue_length
                        + (SELECT count(*) FROM due WHERE status = 'queued'),
                    last_updated = (SELECT ts FROM now)
                WHERE id = :queue_id AND EXISTS (SELECT 1 FROM due)
            )
            SELECT id, attempt FROM due WHERE status = 'scheduled' ORDER BY priority DESC, seq
        """),
        {"queue_id": line.queue_id},
    ).all()
    held = [Grant(r.id, r.attempt, line.action_ref, line.timeout_s) for r in rows]
    return held + admit(session, line)


def enqueue(
    session: Session,
    settings: Settings,
    action_ref: str,
    params: Any,
    priority: int = 0,
    replay_of: int | None = None,
) -> Enqueued:
    """Put a new execution at the tail of its line and admit what fits; QueueFull past the cap."""
    action = session.execute(
        text("""
            SELECT a.id, a.ref, a.runner, a.timeout_s, a.parameters_schema,
                   a.policy AS action_policy, p.policy AS pack_policy,
                   a.paused_at IS NOT NULL AS paused
            FROM actions a JOIN packs p ON p.id = a.pack_id WHERE a.ref = :ref
        """),
        {"ref": action_ref},
    ).one_or_none()
    if action is None:
        raise UnknownAction(f"no action named {action_ref!r}; see `usher packs load`")
    params = parameters.validate(
        action.parameters_schema, params, action.runner, settings.max_parameters_bytes
    )
    resolved = limits.resolve(action.action_policy, action.pack_policy, settings)
    key = limits.partition_key(resolved.partition_by, params)
    # Create-or-lock the line and take the next seq in one statement: seq follows lock order.
    queue = session.execute(
        text("""
            INSERT INTO queues AS q (action_id, partition_key, next_seq, queue_length,
                                     total_enqueued)
            VALUES (:action_id, :key, 1, 1, 1)
            ON CONFLICT (action_id, partition_key) DO UPDATE SET
                next_seq = q.next_seq + 1,
                queue_length = q.queue_length + 1,
                total_enqueued = q.total_enqueued + 1,
                last_updated = clock_timestamp()
            WHERE q.queue_length < :max_length
            RETURNING q.id, q.next_seq
        """),
        {"action_id": action.id, "key": key, "max_length": resolved.max_queue_length},
    ).one_or_none()
    if queue is None:
        raise QueueFull(
            f"the line of {action_ref}{f' [{key}]' if key else ''} is full "
            f"({resolved.max_queue_length} waiting); retry later or raise max_queue_length"
        )
    execution_id = session.execute(
        text("""
            INSERT INTO executions (action_id, queue_id, seq, priority, status, parameters,
                                    enqueued_at, queued_at, replay_of)
            VALUES (:action_id, :queue_id, :seq, :priority, 'queued', CAST(:params AS jsonb),
                    clock_timestamp(), clock_timestamp(), :replay_of)
            RETURNING id
        """),
        {
            "action_id": action.id,
            "queue_id": queue.id,
            "seq": queue.next_seq,
            "priority": priority,
            "params": _json(params),
            "replay_of": replay_of,
        },
    ).scalar_one()
    line = Line(
        queue.id,
        action.ref,
        action.timeout_s,
        resolved,
        retry.resolve(action.action_policy, action.pack_policy, settings),
        action.paused,
    )
    return Enqueued(execution_id, queue.next_seq, admit(session, line))


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
        """
            UPDATE executions e SET status = 'running', started_at = clock_timestamp(),
                worker = %(worker)s,
                lease_expires_at = clock_timestamp() + make_interval(secs => %(lease_s)s)
            FROM actions a
            WHERE e.id = %(id)s AND e.attempt = %(attempt)s
              AND (e.status = 'scheduled' OR (e.status = 'running' AND e.worker = %(worker)s))
              AND a.id = e.action_id
            RETURNING e.id, e.attempt, e.parameters, a.ref, a.runner, a.runner_config, a.timeout_s,
                      a.parameters_schema
        """,
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
        """
            UPDATE executions e
            SET lease_expires_at = clock_timestamp() + make_interval(secs => %(s)s)
            FROM unnest(CAST(%(ids)s AS bigint[]), CAST(%(attempts)s AS integer[]))
                AS h(id, attempt)
            WHERE e.id = h.id AND e.attempt = h.attempt AND e.status = 'running'
            RETURNING e.id, e.attempt
        """,
        {"ids": [h[0] for h in held], "attempts": [h[1] for h in held], "s": float(lease_s)},
    )
    return {(r.id, r.attempt) for r in rows}


def release(
    session: Session,
    settings: Settings,
    execution_id: int,
    attempt: int,
    outcome: str,
    result: Any = None,
    error: str | None = None,
    transient: bool = True,
    lease_expired: bool = False,
    fast: bool = True,
) -> Released:
    """End this attempt, record it, and free its slot and grant the next, all at once.

    A failure becomes ``retrying`` (attempt + 1, due at ``not_before``) while the retry
    policy allows and the failure is transient, else ``dead`` (the dead-letter queue).
    Idempotent and fenced: a second signal, a late worker or a stale attempt changes nothing.
    ``lease_expired`` (the sweeper) releases only if no heartbeat renewed the lease since.
    ``fast=False`` skips trying ``finish`` first (the caller already did).
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
    if fast and outcome in FINISHES and not lease_expired:
        finished = finish(session, settings, execution_id, attempt, outcome, result, error)
        if finished is not None:
            return finished
    line = lock_line_of(session, settings, execution_id)
    policy = line.retry
    if outcome in ("succeeded", "cancelled"):
        status = outcome
    elif transient and policy.allows_retry(attempt):
        status = "retrying"
    else:
        status = "dead"
    hold = status == "retrying" and policy.hold_slot
    delay_s = policy.delay_ms(attempt) / 1000 if status == "retrying" else 0.0
    released = session.execute(
        text("""
            SELECT queue_id, not_before FROM usher_release(
                :id, :attempt, :status, :outcome, :hold, :delay_s, CAST(:result AS jsonb),
                :error, :lease_expired)
        """),
        {
            "id": execution_id,
            "attempt": attempt,
            "status": status,
            "outcome": outcome,
            "hold": hold,
            "delay_s": delay_s,
            "result": _json(result) if result is not None else None,
            "error": error,
            "lease_expired": lease_expired,
        },
    ).one_or_none()
    if released is None:
        return Released(None, [])
    grants = [] if hold else admit(session, line)
    return Released(
        status, grants, released.queue_id, released.not_before, line.notes.get("wake_at")
    )


def finish(
    executor: db.Executor,
    settings: Settings,
    execution_id: int,
    attempt: int,
    outcome: str,
    result: Any = None,
    error: str | None = None,
) -> Released | None:
    """``release`` in one statement for a success or cancel on a line without rate limits.

    Safe on an autocommit connection: the statement is its own transaction, so a worker
    ends an attempt, frees its slot and grants the next execution in one round trip.
    None when the line needs a Python policy: nothing changed, call ``release``.
    """
    if outcome not in FINISHES:
        raise ValueError(f"finish takes one of {FINISHES}, not {outcome!r}")
    (row,) = db.fetch(
        executor,
        """
            SELECT kind, queue_id, action_ref, timeout_s, grant_ids, grant_attempts
            FROM usher_finish(%(id)s, %(attempt)s, %(status)s, CAST(%(result)s AS jsonb),
                              %(error)s, %(limit)s)
        """,
        {
            "id": execution_id,
            "attempt": attempt,
            "status": outcome,
            "result": _json(result) if result is not None else None,
            "error": error,
            "limit": settings.default_max_concurrent,
        },
    )
    if row.kind == "policy":
        return None
    if row.kind == "stale":
        return Released(None, [])
    grants = [
        Grant(grant_id, grant_attempt, row.action_ref, row.timeout_s)
        for grant_id, grant_attempt in zip(row.grant_ids, row.grant_attempts, strict=True)
    ]
    return Released(outcome, grants, row.queue_id)


def cancel(session: Session, settings: Settings, execution_id: int) -> Cancelled:
    """Cancel a queued, scheduled or running execution; a freed slot goes to the next in line."""
    line = lock_line_of(session, settings, execution_id)
    previous = session.execute(
        text("SELECT status FROM executions WHERE id = :id FOR UPDATE"), {"id": execution_id}
    ).scalar_one()
    if previous not in ("queued", "scheduled", "running", "retrying"):
        raise AlreadyFinished(f"execution {execution_id} is already {previous}")
    held = session.execute(
        text("SELECT holds_slot FROM executions WHERE id = :id"), {"id": execution_id}
    ).scalar_one()
    counter = {
        "queued": "queue_length",
        "scheduled": "active_count",
        "running": "active_count",
        "retrying": "active_count" if held else None,
    }[previous]
    session.execute(
        text(f"""
            WITH done AS (
                UPDATE executions SET status = 'cancelled', finished_at = clock_timestamp(),
                    lease_expires_at = NULL, holds_slot = false, error = 'cancelled by request'
                WHERE id = :id
            )
            UPDATE queues SET {f"{counter} = {counter} - 1," if counter else ""}
                total_cancelled = total_cancelled + 1, last_updated = clock_timestamp()
            WHERE id = :queue_id
        """),
        {"id": execution_id, "queue_id": line.queue_id},
    )
    grants = admit(session, line) if counter == "active_count" else []
    return Cancelled(previous, grants)


def expire(session: Session, line: Line) -> int:
    """Mark executions that waited longer than the line's queue timeout as expired.

    The wait counts from when the execution joined the line: ``queued_at``, which for a
    retry back in line is the end of its backoff, not its first enqueue (a retry of a long
    run would otherwise expire the moment it rejoined). The caller holds the line's lock.
    """
    return int(
        session.execute(
            text("""
                WITH gone AS (
                    UPDATE executions SET status = 'expired', finished_at = clock_timestamp(),
                        error = 'waited longer than queue_timeout_s'
                    WHERE queue_id = :queue_id AND status = 'queued'
                      AND coalesce(queued_at, enqueued_at)
                          < clock_timestamp() - make_interval(secs => :timeout)
                    RETURNING id
                ), counted AS (
                    UPDATE queues SET queue_length = queue_length - (SELECT count(*) FROM gone),
                        total_expired = total_expired + (SELECT count(*) FROM gone),
                        last_updated = clock_timestamp()
                    WHERE id = :queue_id AND EXISTS (SELECT 1 FROM gone)
                )
                SELECT count(*) FROM gone
            """),
            {"queue_id": line.queue_id, "timeout": line.limits.queue_timeout_s},
        ).scalar_one()
    )


def position(session: Session, execution_id: int) -> int | None:
    """1-based place in the line of a queued execution; None once it left the line."""
    value = session.execute(
        text("""
            SELECT CASE WHEN e.status = 'queued' THEN (
                SELECT count(*) FROM executions w
                WHERE w.queue_id = e.queue_id AND w.status = 'queued'
                  AND (w.priority > e.priority OR (w.priority = e.priority AND w.seq <= e.seq))
            ) END
            FROM executions e WHERE e.id = :id
        """),
        {"id": execution_id},
    ).scalar_one_or_none()
    return None if value is None else int(value)


def _json(value: Any) -> str:
    import json

    return json.dumps(value, default=str)
