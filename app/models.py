"""SQLAlchemy 2 typed models. The schema itself is made only by Alembic (migrations/)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# The vocabulary, here too: ``models.Status``, ``models.FINISHED``... read as one would expect.
from app.statuses import ACTIVE, CANCELLABLE, COUNTERS, FINISHED, STATUSES, Status

__all__ = ["ACTIVE", "CANCELLABLE", "COUNTERS", "FINISHED", "STATUSES", "Status"]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Pack(Base):
    __tablename__ = "packs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, server_default="")
    policy: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    actions: Mapped[list[Action]] = relationship(back_populates="pack")


class Action(Base):
    __tablename__ = "actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pack_id: Mapped[int] = mapped_column(ForeignKey("packs.id", ondelete="CASCADE"), index=True)
    ref: Mapped[str] = mapped_column(String(401), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, server_default="")
    runner: Mapped[str] = mapped_column(String(50))
    runner_config: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    parameters_schema: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb")
    )
    timeout_s: Mapped[int | None] = mapped_column(Integer)
    policy: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # The keys of ``policy`` a live change set (shown as a live override); a pack load clears it.
    live_policy: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # The limits that policy and the pack's policy give, written by policies.limits.store
    # wherever a policy is written, read by usher_finish (NULL: the settings' default).
    resolved_concurrency: Mapped[int | None] = mapped_column(Integer)
    resolved_rate_limited: Mapped[bool] = mapped_column(Boolean, server_default=false())
    # When it last became rate-limited (policies.limits.store): a line's grant record that
    # started before it misses the grants made without a limit (policies.ratelimit).
    rate_limited_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set while the action's lines are paused: nothing is granted, waiting work keeps its place.
    paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The level group (policies.levels): NULL unless the action takes a total or a pool.
    level_group: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    pack: Mapped[Pack] = relationship(back_populates="actions")


class Queue(Base):
    """One waiting line: an action, or one partition of it. The row lock is the semaphore."""

    __tablename__ = "queues"
    __table_args__ = (UniqueConstraint("action_id", "partition_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    action_id: Mapped[int] = mapped_column(ForeignKey("actions.id", ondelete="CASCADE"))
    partition_key: Mapped[str] = mapped_column(Text, server_default="")
    next_seq: Mapped[int] = mapped_column(BigInteger, server_default="0")
    queue_length: Mapped[int] = mapped_column(Integer, server_default="0")
    active_count: Mapped[int] = mapped_column(Integer, server_default="0")
    # Its action's level group, copied so a line's lock reads it (policies.levels), and when
    # it last granted (a total serves its partitions round robin by it).
    level_group: Mapped[int | None] = mapped_column(Integer)
    last_granted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    total_enqueued: Mapped[int] = mapped_column(BigInteger, server_default="0")
    total_completed: Mapped[int] = mapped_column(BigInteger, server_default="0")
    total_failed: Mapped[int] = mapped_column(BigInteger, server_default="0")
    total_cancelled: Mapped[int] = mapped_column(BigInteger, server_default="0")
    total_expired: Mapped[int] = mapped_column(BigInteger, server_default="0")
    last_updated: Mapped[datetime] = _now()
    # The grants of a rate-limited line, numbered (policies.ratelimit): how many so far, the
    # number up to which rate_grants rows are gone, and since when the record is complete
    # (NULL: to be filled from the line's history).
    rate_grants_total: Mapped[int] = mapped_column(BigInteger, server_default="0")
    rate_grants_pruned: Mapped[int] = mapped_column(BigInteger, server_default="0")
    rate_recorded_from: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class RateGrant(Base):
    """Grant number ``n`` of a rate-limited line, and when it was made: the last ones only
    (policies.ratelimit prunes the others)."""

    __tablename__ = "rate_grants"
    __table_args__ = (Index("ix_rate_grants_queue_id_granted_at", "queue_id", "granted_at", "n"),)

    queue_id: Mapped[int] = mapped_column(
        ForeignKey("queues.id", ondelete="CASCADE"), primary_key=True
    )
    n: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ExecutionRequest(Base):
    """What was asked, written once: the action, its parameters, who asked and when. An
    execution's state, which changes, is its ``execution_state`` row; the view
    ``executions`` (migration 0025) joins the two for reading."""

    __tablename__ = "execution_requests"
    __table_args__ = (
        Index("ix_execution_requests_action_id_id", "action_id", text("id DESC")),
        # The list's filters (GET /api/v1/executions): parameters, requester, time.
        Index(
            "ix_execution_requests_parameters",
            "parameters",
            postgresql_using="gin",
            postgresql_ops={"parameters": "jsonb_path_ops"},
        ),
        Index(
            "ix_execution_requests_requested_by_id",
            "requested_by",
            text("id DESC"),
            postgresql_where=text("requested_by IS NOT NULL"),
        ),
        Index("ix_execution_requests_enqueued_at", "enqueued_at"),
        # What retention's delete of an execution looks up (ON DELETE SET NULL of the two).
        Index(
            "ix_execution_requests_replay_of",
            "replay_of",
            postgresql_where=text("replay_of IS NOT NULL"),
        ),
        Index(
            "ix_execution_requests_rerun_of",
            "rerun_of",
            postgresql_where=text("rerun_of IS NOT NULL"),
        ),
        # A line's places are unique: checked once, when the execution joins its line.
        UniqueConstraint("queue_id", "seq"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    action_id: Mapped[int] = mapped_column(ForeignKey("actions.id", ondelete="CASCADE"))
    # Its line and place (copied to its state, whose indexes need them).
    queue_id: Mapped[int] = mapped_column(ForeignKey("queues.id", ondelete="CASCADE"))
    seq: Mapped[int | None] = mapped_column(BigInteger)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    enqueued_at: Mapped[datetime] = _now()
    replay_of: Mapped[int | None] = mapped_column(
        ForeignKey("execution_requests.id", ondelete="SET NULL")
    )
    # A re-run (policies.rerun) names the execution it repeats, with its overrides merged in.
    rerun_of: Mapped[int | None] = mapped_column(
        ForeignKey("execution_requests.id", ondelete="SET NULL")
    )
    # Who asked: ``rule:<ref>``, ``schedule:<ref>``, a token's name or ``cli:<user>``.
    requested_by: Mapped[str | None] = mapped_column(Text)

    action: Mapped[Action] = relationship()


class ExecutionState(Base):
    """An execution's volatile state: every status change is an UPDATE of this narrow row
    and its few indexes, never of the request's (docs/scaling.md, "One narrow row per
    change"). Its id is its request's."""

    __tablename__ = "execution_state"
    # fillfactor 85 (migration 0025): room on each page for a renewal's HOT update.
    __table_args__ = (
        # The waiting line, in grant order: a partial index holds only waiting rows.
        Index(
            "ix_execution_state_waiting",
            "queue_id",
            text("priority DESC"),
            "seq",
            postgresql_where=text("status = 'queued'"),
        ),
        # Not keyed on the lease: a renewal is a HOT update (migration 0025).
        Index(
            "ix_execution_state_active",
            text("id DESC"),
            postgresql_where=text("status IN ('scheduled', 'running')"),
        ),
        # The other statuses: a grant or a claim writes the active index only.
        Index(
            "ix_execution_state_status_id",
            "status",
            text("id DESC"),
            postgresql_where=text("status NOT IN ('scheduled', 'running')"),
        ),
        Index(
            "ix_execution_state_retrying",
            "not_before",
            postgresql_where=text("status = 'retrying'"),
        ),
        Index(
            "ix_execution_state_dlq",
            text("id DESC"),
            postgresql_where=text("status = 'dead' AND dlq_cleared_at IS NULL"),
        ),
        # What beat looks for every second: delayed executions in (run_at, id) order.
        Index(
            "ix_execution_state_delayed",
            "run_at",
            "id",
            postgresql_where=text("status = 'delayed'"),
        ),
        # A coalescing action's waiting rows by their parameters' hash (policies.busy).
        Index(
            "ix_execution_state_waiting_params",
            "queue_id",
            "params_hash",
            postgresql_where=text("status = 'queued' AND params_hash IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(
        ForeignKey("execution_requests.id", ondelete="CASCADE"), primary_key=True
    )
    queue_id: Mapped[int] = mapped_column(ForeignKey("queues.id", ondelete="CASCADE"))
    # Taken when it joins its line: NULL while delayed (and for one that never joined).
    seq: Mapped[int | None] = mapped_column(BigInteger)
    priority: Mapped[int] = mapped_column(Integer, server_default="0")
    status: Mapped[str] = mapped_column(String(20))
    attempt: Mapped[int] = mapped_column(Integer, server_default="1")
    # When this attempt joined the line: enqueued_at for the first, the retry's due time after.
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    holds_slot: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    scheduled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker: Mapped[str | None] = mapped_column(String(300))
    result: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    # The levels (totals, pools) whose slots this execution holds; its release frees them.
    levels: Mapped[list[int]] = mapped_column(
        ARRAY(Integer), server_default=text("'{}'::integer[]")
    )
    # Set when a dead execution leaves the dead-letter queue (replayed or purged).
    dlq_cleared_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A delayed run's time: it joins its line then (and keeps it as a record afterwards).
    run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # For an action with coalesce: its parameters' hash (policies.busy); NULL otherwise.
    params_hash: Mapped[int | None] = mapped_column(BigInteger)
    cancelled_by: Mapped[str | None] = mapped_column(Text)


class Attempt(Base):
    """The history of an execution: one row per finished attempt."""

    __tablename__ = "attempts"
    __table_args__ = (
        UniqueConstraint("execution_id", "attempt"),
        # A line's recent starts (the dashboard's pace), without reading its executions.
        Index("ix_attempts_queue_id_started_at", "queue_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    execution_id: Mapped[int] = mapped_column(
        ForeignKey("execution_requests.id", ondelete="CASCADE")
    )
    # The execution's line, copied by the attempts_line trigger when the writer leaves it out.
    queue_id: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(20))
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    scheduled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    worker: Mapped[str | None] = mapped_column(String(300))
    error: Mapped[str | None] = mapped_column(Text)
    # True when the execution kept its slot into the next attempt (retry.hold_slot).
    kept_slot: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))


class AttemptTotal(Base):
    """A line's attempt history summed per outcome, kept by triggers on ``attempts`` (0005):
    what /metrics reads instead of the history. Histograms hold one count per bucket, then
    +Inf, then attempts without the value."""

    __tablename__ = "attempt_totals"

    queue_id: Mapped[int] = mapped_column(
        ForeignKey("queues.id", ondelete="CASCADE"), primary_key=True
    )
    outcome: Mapped[str] = mapped_column(String(20), primary_key=True)
    attempts: Mapped[int] = mapped_column(BigInteger, server_default="0")
    retries: Mapped[int] = mapped_column(BigInteger, server_default="0")
    run_sum: Mapped[Decimal] = mapped_column(Numeric, server_default="0")
    wait_sum: Mapped[Decimal] = mapped_column(Numeric, server_default="0")
    run_hist: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    wait_hist: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))


class Rule(Base):
    __tablename__ = "rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pack_id: Mapped[int] = mapped_column(ForeignKey("packs.id", ondelete="CASCADE"), index=True)
    ref: Mapped[str] = mapped_column(String(401), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, server_default="")
    trigger: Mapped[str] = mapped_column(String(200), index=True)
    criteria: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    action_ref: Mapped[str] = mapped_column(String(401))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    priority: Mapped[int] = mapped_column(Integer, server_default="0")
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class Schedule(Base):
    """A pack's schedule: when it fires (exactly one of cron, every_s, at, in its timezone)
    and what (an action, or an event of a trigger). ``next_fire_at`` is the tick a beat
    fires next (NULL: none left, a one-off that fired)."""

    __tablename__ = "schedules"
    __table_args__ = (
        CheckConstraint("num_nonnulls(cron, every_s, at) = 1", name="one_timing"),
        CheckConstraint("num_nonnulls(action_ref, trigger) = 1", name="one_target"),
        CheckConstraint("missed IN ('skip', 'run_once')", name="missed"),
        # What a beat looks for every second: only schedules that may fire.
        Index(
            "ix_schedules_due",
            "next_fire_at",
            postgresql_where=text("enabled AND paused_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pack_id: Mapped[int] = mapped_column(ForeignKey("packs.id", ondelete="CASCADE"), index=True)
    ref: Mapped[str] = mapped_column(String(401), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, server_default="")
    cron: Mapped[str | None] = mapped_column(String(200))
    every_s: Mapped[float | None] = mapped_column(Float)
    at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    timezone: Mapped[str] = mapped_column(String(64), server_default="UTC")
    action_ref: Mapped[str | None] = mapped_column(String(401))
    trigger: Mapped[str | None] = mapped_column(String(200))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    missed: Mapped[str] = mapped_column(String(20), server_default="skip")
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_fire_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The latest tick fired (its fire time, not when a beat got to it).
    last_fire_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class ScheduleFire(Base):
    """One tick fired. Its primary key is what makes a tick fire once, however many beats
    run: a beat inserts it ``ON CONFLICT DO NOTHING`` and acts only on a row it inserted."""

    __tablename__ = "schedule_fires"

    schedule_id: Mapped[int] = mapped_column(
        ForeignKey("schedules.id", ondelete="CASCADE"), primary_key=True
    )
    fire_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("events.id", ondelete="SET NULL"), index=True
    )
    fired_at: Mapped[datetime] = _now()


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index(
            "ix_events_unprocessed",
            "id",
            postgresql_where=text("processed_at IS NULL AND failed_at IS NULL"),
        ),
        # GET /api/v1/events?trigger=: a page of one trigger's events, newest first.
        Index("ix_events_trigger_id", "trigger", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    trigger: Mapped[str] = mapped_column(String(200))
    payload: Mapped[Any] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    received_at: Mapped[datetime] = _now()
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Tries that did not finish; past USHER_EVENT_MAX_FAILURES the event ends failed.
    failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    # Steps of a chain: 0 from outside, one more than its cause for an usher.execution event.
    depth: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class Enforcement(Base):
    """One rule matching one event: executed, rejected (with the reason) or skipped."""

    __tablename__ = "enforcements"
    __table_args__ = (
        UniqueConstraint("event_id", "rule_ref"),
        Index(
            "ix_enforcements_execution_id",
            "execution_id",
            postgresql_where=text("execution_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("rules.id", ondelete="SET NULL"))
    rule_ref: Mapped[str] = mapped_column(String(401))
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    execution_id: Mapped[int | None] = mapped_column(
        ForeignKey("execution_requests.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = _now()


class ApiToken(Base):
    """An API token, stored as its SHA-256 (the token itself is shown once, at creation)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    read_only: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = _now()
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebSession(Base):
    """A dashboard login: the cookie carries the nonce, this row only its SHA-256. Logging
    out ends the row, so a copied cookie stops working everywhere at once."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    nonce_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class QueueSample(Base):
    """A line's depth and wait, sampled by the sweeper for the dashboard's charts."""

    __tablename__ = "queue_samples"
    __table_args__ = (
        Index(
            "ix_queue_samples_action_id_sampled_at",
            "action_id",
            "sampled_at",
            postgresql_include=["queue_length", "completed"],
        ),
        Index(
            "ix_queue_samples_sampled_at",
            "sampled_at",
            postgresql_using="brin",
            postgresql_with={"pages_per_range": 32},
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    action_id: Mapped[int] = mapped_column(ForeignKey("actions.id", ondelete="CASCADE"))
    sampled_at: Mapped[datetime] = _now()
    queue_length: Mapped[int] = mapped_column(Integer)
    active_count: Mapped[int] = mapped_column(Integer)
    oldest_wait_s: Mapped[float | None] = mapped_column(Float)
    completed: Mapped[int] = mapped_column(BigInteger)


class Webhook(Base):
    """A pack's webhook (``POST /hooks/<ref>``): the trigger of its events, how a request is
    authenticated, and the name of its secret (the value is resolved by the web process at
    request time, never stored)."""

    __tablename__ = "webhooks"
    __table_args__ = (CheckConstraint("kind IN ('hmac_sha256', 'token')", name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pack_id: Mapped[int] = mapped_column(ForeignKey("packs.id", ondelete="CASCADE"), index=True)
    ref: Mapped[str] = mapped_column(String(401), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, server_default="")
    trigger: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    secret_name: Mapped[str] = mapped_column(String(128))
    header: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(100), server_default="")
    delivery_header: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class WebhookDelivery(Base):
    """A delivery id a webhook took. The primary key is what makes a delivery sent twice
    (or by two requests at once) one event: the claim is an ``INSERT ... ON CONFLICT DO
    NOTHING``. It goes with its event when the sweeper prunes that."""

    __tablename__ = "webhook_deliveries"

    webhook_id: Mapped[int] = mapped_column(
        ForeignKey("webhooks.id", ondelete="CASCADE"), primary_key=True
    )
    delivery_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    # NULL only inside the transaction that claims it, until its event is stored.
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("events.id", ondelete="CASCADE"), index=True
    )
    received_at: Mapped[datetime] = _now()


class WebhookRequests(Base):
    """Requests to /hooks by webhook ref ("" for none known) and outcome, for
    ``usher_webhook_requests_total``: counted in Postgres, like every metric."""

    __tablename__ = "webhook_requests"

    webhook: Mapped[str] = mapped_column(String(401), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(20), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class IdempotencyKey(Base):
    """A request's ``Idempotency-Key``, per scope (``execution:<action>``, ``event:<trigger>``):
    what the request was (``fingerprint``) and what it was answered. Its primary key makes
    two racing requests one: the second waits on the first's insert, then reads its answer."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)

    scope: Mapped[str] = mapped_column(String(420), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    response: Mapped[Any | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()


class Level(Base):
    """A limit above the line: an action's ``total_concurrency`` or a pack's pool. ``active``
    counts the executions holding one of its slots (policies.levels)."""

    __tablename__ = "levels"
    __table_args__ = (
        UniqueConstraint("kind", "ref"),
        CheckConstraint("kind IN ('total', 'pool')", name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    ref: Mapped[str] = mapped_column(String(401))
    pack_id: Mapped[int] = mapped_column(ForeignKey("packs.id", ondelete="CASCADE"))
    # The limit in the files, and a live change's until the next pack load.
    max: Mapped[int] = mapped_column(Integer)
    live_max: Mapped[int | None] = mapped_column(Integer)
    active: Mapped[int] = mapped_column(Integer, server_default="0")
    last_updated: Mapped[datetime] = _now()


class ActionLevel(Base):
    """The levels an action takes a slot of, besides its line's."""

    __tablename__ = "action_levels"

    action_id: Mapped[int] = mapped_column(
        ForeignKey("actions.id", ondelete="CASCADE"), primary_key=True
    )
    level_id: Mapped[int] = mapped_column(
        ForeignKey("levels.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Audit(Base):
    """One mutation: a mutating request (API, dashboard, webhook) or CLI command, refused
    ones too (``app.audit``). Read newest first by id."""

    __tablename__ = "audit"
    __table_args__ = (
        CheckConstraint(
            "detail IS NULL OR octet_length(CAST(detail AS text)) <= 4096", name="detail_size"
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("clock_timestamp()"), nullable=False
    )
    actor: Mapped[str] = mapped_column(Text)
    verb: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(Text)
    detail: Mapped[Any | None] = mapped_column(JSONB)


class ExecutionOutput(Base):
    """A piece of an attempt's stdout or stderr, appended while it runs (``tasks.output``):
    masked, at most ``USHER_OUTPUT_MAX_BYTES`` per stream and attempt, about one a second."""

    __tablename__ = "execution_output"
    __table_args__ = (CheckConstraint("stream IN ('stdout', 'stderr')", name="stream"),)

    execution_id: Mapped[int] = mapped_column(
        ForeignKey("execution_requests.id", ondelete="CASCADE"), primary_key=True
    )
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    stream: Mapped[str] = mapped_column(Text, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    chunk: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("clock_timestamp()"), nullable=False
    )


class HistoryPruned(Base):
    """What retention removed, counted by what /metrics counts of it (``family``: events by
    trigger, enforcements by rule and status, refusals by action and reason, schedule fires
    by schedule): a family's total is its rows plus these, so no counter goes down when old
    rows go (``policies.retention``)."""

    __tablename__ = "history_pruned"

    family: Mapped[str] = mapped_column(Text, primary_key=True)
    label: Mapped[str] = mapped_column(Text, primary_key=True)
    detail: Mapped[str] = mapped_column(Text, primary_key=True, server_default=text("''"))
    n: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class Installation(Base):
    """This installation's id, one row made by the migrations: in every queue name and
    message of it (``app.celery``), so installations sharing a broker vhost stay apart."""

    __tablename__ = "installation"
    __table_args__ = (
        CheckConstraint("one", name="one"),
        CheckConstraint("id ~ '^[0-9a-f]{12}$'", name="id_hex"),
    )

    one: Mapped[bool] = mapped_column(Boolean, primary_key=True, server_default=text("true"))
    id: Mapped[str] = mapped_column(
        Text, server_default=text("left(replace(CAST(gen_random_uuid() AS text), '-', ''), 12)")
    )
    created_at: Mapped[datetime] = _now()
