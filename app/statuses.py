"""The words every layer shares about executions and lines: an execution's statuses and
their groups, and a line's counters. The tables that hold them are ``app.models``."""

from __future__ import annotations

from enum import StrEnum

# A line's counters (columns of ``queues``), in the order every listing shows them.
COUNTERS = (
    "queue_length",
    "active_count",
    "total_enqueued",
    "total_completed",
    "total_failed",
    "total_cancelled",
    "total_expired",
)


class Status(StrEnum):
    """An execution's status (docs/architecture.md, "Execution statuses")."""

    # Asked to run later (run_at): holds no place in line (no seq) until it falls due.
    delayed = "delayed"
    queued = "queued"
    scheduled = "scheduled"
    running = "running"
    retrying = "retrying"
    succeeded = "succeeded"
    failed = "failed"
    timed_out = "timed_out"
    dead = "dead"
    cancelled = "cancelled"
    expired = "expired"
    # A delayed execution whose line was full when it fell due (a request would get 429).
    rejected = "rejected"


# Statuses that hold a concurrency slot (and so does ``retrying`` with ``holds_slot``).
ACTIVE = (Status.scheduled, Status.running)
FINISHED = (
    Status.succeeded,
    Status.failed,
    Status.timed_out,
    Status.dead,
    Status.cancelled,
    Status.expired,
    Status.rejected,
)
STATUSES = tuple(Status)
# What a cancel takes: every status but the final ones.
CANCELLABLE = tuple(s for s in Status if s not in FINISHED)
