"""Intake: execution requests, one or many in one transaction, a few statements for all.

Each item is all-or-nothing on its own: a refused item (malformed, unknown action, parameters
failing the schema, line full) gets its error, and the others are enqueued; a line accepts as
many as the same requests sent one by one would get in. A single request is the batch of one
(``admission.enqueue`` raises its error). Items are grouped by line. One upsert on ``queues``
creates or locks every line of the batch (always in (action, partition) order, so two batches
never deadlock on each other); under those locks each group takes its seq numbers in request
order, one statement counts them on the lines and one inserts every execution.
``lines.admit`` then runs once per line. This never commits: the caller owns the transaction
and publishes ``grants`` after it.

A line whose action sets ``when_busy`` or ``coalesce`` (or whose requests set ``when_busy``)
takes its items one at a time instead (``_one_by_one``), each decided by ``policies.busy``
after those before it: whether one equal waits already, then whether it would wait.
Every line of such a batch is locked first, all at once.

A request with ``run_at`` (or ``delay_s``) still ahead by the database's clock is inserted
``delayed``: no seq, no place in line, not counted; ``policies.delayed`` makes it join its
line when it falls due. Its line is locked all the same (with the others, in the one order),
since it is created there. A time already passed joins at once, as a request without one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app import queries, sql
from app.config import Settings
from app.errors import InvalidParameters, UsherError
from policies import actions, busy, delayed, emitted, eta, limits, lines, requests

# Items per batch request (API): enough to amortise the round trips, small enough for one
# short transaction.
MAX_BATCH = requests.MAX_BATCH


@dataclass(frozen=True)
class Request:
    """A request already checked for shape (``fields``), as the product's own callers make
    them; ``replay_of`` links a DLQ replay to the dead execution, ``rerun_of`` a re-run to the
    one it repeats; ``requested_by`` is who asked (``rule:<ref>``, ``schedule:<ref>``, a
    token's name, ``cli:<user>``)."""

    action: str
    parameters: Any
    priority: int = 0
    replay_of: int | None = None
    run_at: datetime | None = None  # join the line then (``delayed`` until)
    delay_s: float | None = None  # or this many seconds from now, by the database's clock
    when_busy: str | None = None  # else the action's policy (policies.busy)
    requested_by: str | None = None
    rerun_of: int | None = None


@dataclass(frozen=True)
class ItemResult:
    """One request's outcome: an execution (``queued``, ``scheduled``, or ``delayed`` until
    ``run_at``) or the error."""

    index: int
    execution_id: int | None = None
    seq: int | None = None
    status: str | None = None
    error: UsherError | None = None
    run_at: datetime | None = None
    coalesced: bool = False  # an equal waiting execution's: nothing was created

    @property
    def ok(self) -> bool:
        return self.error is None


class Intake(list[ItemResult]):
    """The results in request order, every grant the batch made, the running executions its
    ``cancel_running`` requests cancelled and the execution events its cancels emitted
    (after commit: ``app.celery.after_intake``)."""

    def __init__(
        self,
        items: Iterable[ItemResult],
        grants: list[lines.Grant],
        stopped: Sequence[busy.Stopped] = (),
        events: tuple[int, ...] = (),
    ) -> None:
        super().__init__(items)
        self.grants = grants
        self.stopped = list(stopped)
        self.events = events

    @property
    def accepted(self) -> int:
        return sum(1 for item in self if item.ok)

    @property
    def refused(self) -> int:
        return len(self) - self.accepted


@dataclass
class _Item:
    index: int
    action: actions.Action
    params: dict[str, Any]
    request: Request


def fields(request: Any) -> Request:
    """One request body as a ``Request``, or InvalidRequest: the API's own request model, so
    a batch item and ``usher run`` are checked as a single request is."""
    body = requests.parse(requests.ExecutionRequest, request)
    return Request(
        body.action,
        body.parameters,
        body.priority,
        run_at=body.run_at,
        delay_s=body.delay_s,
        when_busy=body.when_busy,
    )


def _insert(session: Session, rows: list[dict[str, Any]]) -> dict[tuple[int, int], int]:
    """Insert the executions in one statement; returns each new one's id by (queue_id, seq).
    The rows travel as one JSON document: cheaper to encode and to parse than one array per
    column."""
    if not rows:
        return {}
    inserted = session.execute(sql.query("insert_executions"), {"rows": sql.jsonb(rows)}).all()
    return {(r.queue_id, r.seq): r.id for r in inserted}


def _validated(
    session: Session,
    settings: Settings,
    requests: Sequence[Any],
    errors: dict[int, UsherError],
    requested_by: str | Sequence[str | None] | None,
) -> list[_Item]:
    """Items that pass every check made before taking a place in line; errors by index."""
    checked: list[tuple[int, Request]] = []
    for index, request in enumerate(requests):
        try:
            one = request if isinstance(request, Request) else fields(request)
        except UsherError as error:
            errors[index] = error
            continue
        who = requested_by if isinstance(requested_by, str | None) else requested_by[index]
        if one.requested_by is None and who is not None:
            one = replace(one, requested_by=who)
        checked.append((index, one))
    known = actions.find(session, settings, {r.action for _, r in checked}) if checked else {}
    items = []
    refs: list[str] | None = None  # every action's ref, read once for the first unknown one
    for index, request in checked:
        action = known.get(request.action)
        if action is None:
            if refs is None:
                refs = list(session.execute(sql.query("action_refs")).scalars())
            errors[index] = queries.unknown_action(session, request.action, refs)
            continue
        try:
            items.append(_Item(index, action, action.validate(request.parameters), request))
        except InvalidParameters as error:
            errors[index] = error
    return items


def enqueue_many(
    session: Session,
    settings: Settings,
    requests: Sequence[Any],
    requested_by: str | Sequence[str | None] | None = None,
) -> Intake:
    """Enqueue each ``{action, parameters, priority}`` request (or ``Request``) that can be;
    see the module. ``requested_by`` is the requester of those that do not name their own:
    one for all, or one per request (a group commit's single requests, each its token's).

    A line takes what it has room for, then admits; when that admission granted slots (so
    made room) and items are left, the line takes more: exactly what the same requests sent
    one by one would get.
    """
    errors: dict[int, UsherError] = {}
    groups: dict[tuple[int, str], list[_Item]] = {}
    later: dict[tuple[int, str], list[tuple[_Item, datetime]]] = {}
    items = _validated(session, settings, requests, errors, requested_by)
    due, refused = delayed.due_times(
        session,
        [(i.index, i.request.run_at, i.request.delay_s) for i in items if i.index not in errors],
    )
    errors.update(refused)
    for item in items:
        if item.index in errors:
            continue
        key = limits.partition_key(item.action.limits.partition_by, item.params)
        if item.index in due:
            later.setdefault((item.action.id, key), []).append((item, due[item.index]))
        else:
            groups.setdefault((item.action.id, key), []).append(item)
    waiting = _delay(session, groups, later) if later else {}
    placed: dict[int, tuple[int, int]] = {}  # index -> (execution id, seq)
    grants: list[lines.Grant] = []
    minding = sorted(k for k, group in groups.items() if any(map(_minds, group)))
    if minding and not later:  # else _delay locked them all
        lines.lock_lines(session, sorted(groups))
    ended = busy.Ended([], [])
    coalesced: set[int] = set()
    for line_key in minding:
        _one_by_one(session, line_key, groups.pop(line_key), placed, errors, coalesced, ended)
    grants += ended.grants
    pending = sorted(groups)
    while pending:
        pending, granted = _round(session, groups, pending, placed)
        grants += granted
    for (action_id, key), left in groups.items():
        # Still under the line's lock: when a place should free, once per full line.
        wait_s = eta.retry_after_s(session, action_id, key, left[0].action.limits) if left else None
        for item in left:
            errors[item.index] = lines.full(
                item.action.ref, key, item.action.limits.max_queue_length, wait_s
            )
    scheduled = {g.execution_id for g in grants}
    results = []
    for index in range(len(requests)):
        if index in errors:
            results.append(ItemResult(index, error=errors[index]))
        elif index in waiting:
            execution_id, run_at = waiting[index]
            results.append(ItemResult(index, execution_id, None, "delayed", run_at=run_at))
        else:
            execution_id, seq = placed[index]
            status = "scheduled" if execution_id in scheduled else "queued"
            results.append(
                ItemResult(index, execution_id, seq, status, coalesced=index in coalesced)
            )
    events = emitted.read(session) if ended.cancelled else ()
    return Intake(results, grants, ended.stopped, events)


def _delay(
    session: Session,
    groups: dict[tuple[int, str], list[_Item]],
    later: dict[tuple[int, str], list[tuple[_Item, datetime]]],
) -> dict[int, tuple[int, datetime]]:
    """Insert the delayed items (no seq, not counted) and lock every line of the batch at
    once, in the one order; returns index -> (execution id, run_at). Their ids are taken
    first in request order, so that requests due at the same time join in that order."""
    located = lines.lock_lines(session, sorted(set(groups) | set(later)))
    wanted = [(key, item, at) for key, pairs in later.items() for item, at in pairs]
    wanted.sort(key=lambda w: w[1].index)
    ids = sorted(session.execute(sql.query("execution_ids"), {"n": len(wanted)}).scalars().all())
    rows = [
        {**_row(item, located[key].id), "i": execution_id, "t": at.isoformat()}
        for execution_id, (key, item, at) in zip(ids, wanted, strict=True)
    ]
    session.execute(sql.query("insert_delayed"), {"rows": sql.jsonb(rows)})
    return {
        item.index: (execution_id, at)
        for execution_id, (_, item, at) in zip(ids, wanted, strict=True)
    }


def _round(
    session: Session,
    groups: dict[tuple[int, str], list[_Item]],
    keys: list[tuple[int, str]],
    placed: dict[int, tuple[int, int]],
) -> tuple[list[tuple[int, str]], list[lines.Grant]]:
    """Lock these lines, give each group's first items the room there is, admit; returns
    the lines that made room and still have items, and the grants."""
    locked = lines.lock_lines(session, keys)
    of = {key: groups[key][0].action for key in keys}
    taken: dict[int, int] = {}
    rows: list[dict[str, Any]] = []
    indexes: list[int] = []
    for key in keys:
        group, line = groups[key], locked[key]
        room = max(of[key].limits.max_queue_length - line.queue_length, 0)
        take, groups[key] = group[:room], group[room:]
        if take:
            taken[line.id] = len(take)
        for n, item in enumerate(take):
            indexes.append(item.index)
            rows.append(_row(item, line.id, line.next_seq + n + 1))
    lines.count(
        session,
        {q: {"next_seq": n, "queue_length": n, "total_enqueued": n} for q, n in taken.items()},
    )
    ids = _insert(session, rows)
    for index, row in zip(indexes, rows, strict=True):
        placed[index] = (ids[(row["q"], row["s"])], row["s"])
    again: list[tuple[int, str]] = []
    grants: list[lines.Grant] = []
    for key in keys:
        action, queue_id = of[key], locked[key].id
        if queue_id not in taken:
            continue  # full: nothing new to admit, and no room to make
        granted = lines.admit(
            session,
            lines.Line(
                queue_id, action.ref, action.timeout_s, action.limits, action.retry, action.paused
            ),
        )
        grants += granted.grants
        if granted.grants and groups[key]:
            again.append(key)
    return again, grants


def _minds(item: _Item) -> bool:
    """Whether the item's line must take its items one by one (``policies.busy``)."""
    limits = item.action.limits
    return limits.coalesce or (item.request.when_busy or limits.when_busy) != busy.QUEUE


def _row(item: _Item, queue_id: int, seq: int | None = None) -> dict[str, Any]:
    """One execution as the insert statements read it (``insert_executions``,
    ``insert_delayed``: a delayed one has no seq yet)."""
    return {
        "a": item.action.id,
        "q": queue_id,
        "s": seq,
        "p": item.request.priority,
        "d": item.params,
        "r": item.request.replay_of,
        "h": _hash(item),
        "b": item.request.requested_by,
        "o": item.request.rerun_of,
    }


def _hash(item: _Item) -> int | None:
    return busy.params_hash(item.params) if item.action.limits.coalesce else None


def _one_by_one(
    session: Session,
    key: tuple[int, str],
    group: list[_Item],
    placed: dict[int, tuple[int, int]],
    errors: dict[int, UsherError],
    coalesced: set[int],
    ended: busy.Ended,
) -> None:
    """One line's items in request order, each placed and admitted before the next is
    looked at: coalesced with an equal waiting one, refused, or placed and then, if it
    still waits, its when_busy applied (``policies.busy``). The caller holds the line's
    lock."""
    action = group[0].action
    queue_id, partition = lines.lock_lines(session, [key])[key].id, key[1]
    line = lines.Line(
        queue_id, action.ref, action.timeout_s, action.limits, action.retry, action.paused
    )
    for item in group:
        digest = _hash(item)
        twin = busy.twin(session, queue_id, item.params, digest) if digest is not None else None
        if twin is not None:
            placed[item.index] = twin
            coalesced.add(item.index)
            continue
        mode = item.request.when_busy or action.limits.when_busy
        now = busy.counters(session, queue_id)
        replacing = mode in (busy.REPLACE, busy.CANCEL_RUNNING)  # they make their own room
        if now.queue_length >= action.limits.max_queue_length and not replacing:
            wait_s = eta.retry_after_s(session, action.id, partition, action.limits)
            errors[item.index] = lines.full(
                action.ref, partition, action.limits.max_queue_length, wait_s
            )
            continue
        savepoint = session.begin_nested() if mode == busy.SKIP else None
        seq = now.next_seq + 1
        lines.count(session, {queue_id: {"next_seq": 1, "queue_length": 1, "total_enqueued": 1}})
        execution_id = _insert(session, [_row(item, queue_id, seq)])[(queue_id, seq)]
        granted = lines.admit(session, line).grants
        if savepoint is not None and not any(g.execution_id == execution_id for g in granted):
            savepoint.rollback()  # skip: as if it had never been asked
            errors[item.index] = busy.refusal(session, line, partition)
            continue
        if savepoint is not None:
            savepoint.commit()
        ended.grants += granted
        placed[item.index] = (execution_id, seq)
        if not any(g.execution_id == execution_id for g in granted):
            busy.apply(session, line, mode, execution_id, ended, item.request.requested_by)
