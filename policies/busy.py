"""When the line is busy: what a request does that would not be granted at once.

Busy means the request, placed at its line's tail and admitted (after the requests of its
batch before it), is still waiting: its line, a level above it (``policies.levels``), its
rate limit or a pause leaves it no slot. ``policies.intake`` decides it under the line's
lock, so no other transaction changes the line between the look and what follows; then by
the request's ``when_busy`` (else its action's policy):

- ``queue``: it waits in line.
- ``skip``: it is refused (``LineBusy``, 409): intake rolls its insert back to a savepoint,
  so nothing of it is left, not even a seq.
- ``replace``: every other waiting execution of the line is cancelled, ``superseded by
  execution N``: only the newest waits (debounce).
- ``cancel_running``: the waiting ones are superseded, and those holding or about to hold
  a slot of the line (scheduled, running, a retry backing off) are cancelled; the slots
  they free are granted in the same transaction, so it runs next (at a level above the
  line, the freed slot goes to the oldest request there, as any slot does).

Every cancel goes through ``cancels.leave``: the counters, the levels' slots and the
execution events are those of any cancel. ``Stopped`` lists the running ones whose worker
is stopped after the commit (``app.celery.after_intake``).

Coalescing (``coalesce: true``): a request whose parameters equal a waiting execution's
returns that one, creating nothing. ``twin`` looks under the line's lock (a duplicate racing
it waits for the lock, then finds it) by the parameters' hash (``params_hash``, a partial
index of the waiting rows), then compares the parameters themselves.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app import sql
from app.errors import LineBusy
from policies import cancels, lines

QUEUE = "queue"
SKIP = "skip"
REPLACE = "replace"
CANCEL_RUNNING = "cancel_running"


@dataclass(frozen=True)
class Stopped:
    """An execution a ``cancel_running`` request cancelled: stop its worker after commit."""

    execution_id: int
    attempt: int
    previous_status: str


@dataclass(frozen=True)
class Counters:
    next_seq: int
    queue_length: int
    active_count: int


def counters(session: Session, queue_id: int) -> Counters:
    """The line's counters now; the caller holds its lock."""
    row = session.execute(sql.query("line_counters"), {"queue_id": queue_id}).one()
    return Counters(row.next_seq, row.queue_length, row.active_count)


def params_hash(params: Any) -> int:
    """The parameters' canonical JSON, hashed to a signed 64-bit integer (``params_hash``)."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


def twin(session: Session, queue_id: int, params: Any, digest: int) -> tuple[int, int] | None:
    """(id, seq) of a waiting execution of the line with these parameters, if one waits."""
    row = session.execute(
        sql.query("waiting_twin"),
        {"queue_id": queue_id, "hash": digest, "parameters": sql.jsonb(params)},
    ).one_or_none()
    return None if row is None else (int(row.id), int(row.seq))


def refusal(session: Session, line: lines.Line, key: str) -> LineBusy:
    """The 409 of a ``skip`` request: which line, and what holds it."""
    now = counters(session, line.queue_id)
    limit = line.limits.concurrency
    if line.paused:
        held = "the action is paused"
    elif now.active_count < limit and line.limits.leveled:
        held = "a level above it (its total_concurrency or a pool) has no free slot"
    elif now.active_count < limit and line.limits.rate:
        held = "its rate limit allows no grant now"
    else:
        held = f"all {limit} of its slots are taken"
    return LineBusy(
        f"the line of {line.action_ref}{f' [{key}]' if key else ''} is busy: "
        f"{now.active_count} running or scheduled, {now.queue_length} waiting; {held}. "
        "Its when_busy is skip: a request that would wait is refused; try again later"
    )


@dataclass
class Ended:
    """What the modes ended in one intake: the grants the freed slots made, the running
    executions to stop, and whether any execution was cancelled (then read the events)."""

    grants: list[lines.Grant]
    stopped: list[Stopped]
    cancelled: int = 0


def apply(
    session: Session,
    line: lines.Line,
    mode: str,
    new_id: int,
    ended: Ended,
    requested_by: str | None = None,
) -> None:
    """The mode of a busy request, now waiting as ``new_id``, on the other executions of its
    line (see the module); the caller holds the line's lock. Who asked for it
    (``requested_by``) is who cancelled the others (their ``cancelled_by``)."""
    if mode not in (REPLACE, CANCEL_RUNNING):
        return
    others = session.execute(
        sql.query("line_others"),
        {"queue_id": line.queue_id, "keep": new_id, "active": mode == CANCEL_RUNNING},
    ).all()
    # The waiting ones first: a slot freed next must not go to one of them.
    for other in sorted(others, key=lambda r: (r.status != "queued", r.id)):
        if other.status == "queued":
            reason = f"superseded by execution {new_id} (when_busy: replace)"
            if mode == CANCEL_RUNNING:
                reason = f"superseded by execution {new_id} (when_busy: cancel_running)"
        else:
            reason = f"cancelled for execution {new_id} (when_busy: cancel_running)"
        left = cancels.leave(session, line, other.id, reason, requested_by)
        ended.grants += left.grants
        ended.cancelled += 1
        if left.previous_status == "running":
            ended.stopped.append(Stopped(other.id, other.attempt, "running"))
