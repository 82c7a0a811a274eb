"""Bulk intake: many execution requests in one transaction, a few statements for all of them.

Each item is all-or-nothing on its own: a refused item (malformed, unknown action, parameters
failing the schema, line full) gets the error the single request would get, and the others are
enqueued; a line accepts as many as the same requests sent one by one would get in.
Items are grouped by line. One upsert on ``queues`` creates or locks every line of the batch
(always in (action, partition) order, so two batches never deadlock on each other); under
those locks each group takes its seq numbers in request order, and one statement counts them
on the lines and inserts every execution. ``admission.admit`` then runs once per line. Like
``admission.enqueue`` this never commits: the caller owns the transaction and publishes
``grants`` after it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.config import Settings
from app.errors import InvalidParameters, InvalidRequest, QueueFull, UnknownAction, UsherError
from policies import admission, limits, parameters, retry

MAX_PRIORITY = 1000
# Items per batch request (API): enough to amortise the round trips, small enough for one
# short transaction.
MAX_BATCH = 1000


@dataclass(frozen=True)
class ItemResult:
    """One request's outcome: an execution (``queued`` or ``scheduled``) or the error."""

    index: int
    execution_id: int | None = None
    seq: int | None = None
    status: str | None = None
    error: UsherError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Intake(list[ItemResult]):
    """The results in request order, and every grant the batch made (publish after commit)."""

    def __init__(self, items: Iterable[ItemResult], grants: list[admission.Grant]) -> None:
        super().__init__(items)
        self.grants = grants

    @property
    def accepted(self) -> int:
        return sum(1 for item in self if item.ok)

    @property
    def refused(self) -> int:
        return len(self) - self.accepted


@dataclass
class _Action:
    id: int
    ref: str
    timeout_s: int | None
    limits: limits.Limits
    retry: retry.RetryPolicy
    paused: bool
    validate: Callable[[Any], dict[str, Any]]


@dataclass
class _Item:
    index: int
    action: _Action
    params: dict[str, Any]
    priority: int


def fields(request: Any) -> tuple[str, Any, int]:
    """(action, parameters, priority) of one request body, or InvalidRequest."""
    if not isinstance(request, dict):
        raise InvalidRequest("an execution request must be a JSON object {action, parameters}")
    action = request.get("action")
    if not isinstance(action, str) or not action:
        raise InvalidRequest("'action' (an action ref such as 'demo.hello') is required")
    if "\x00" in action or not parameters.unicode_ok(action):
        raise InvalidRequest("the request holds a value Postgres cannot store")
    priority = request.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > MAX_PRIORITY:
        raise InvalidRequest("'priority' must be an integer between -1000 and 1000")
    return action, request.get("parameters", {}), priority


def _actions(session: Session, settings: Settings, refs: set[str]) -> dict[str, _Action]:
    rows = session.execute(
        text("""
            SELECT a.id, a.ref, a.runner, a.timeout_s, a.parameters_schema,
                   a.policy AS action_policy, p.policy AS pack_policy,
                   a.paused_at IS NOT NULL AS paused
            FROM actions a JOIN packs p ON p.id = a.pack_id WHERE a.ref = ANY(:refs)
        """),
        {"refs": sorted(refs)},
    ).all()
    return {
        r.ref: _Action(
            r.id,
            r.ref,
            r.timeout_s,
            limits.resolve(r.action_policy, r.pack_policy, settings),
            retry.resolve(r.action_policy, r.pack_policy, settings),
            r.paused,
            parameters.validator(r.parameters_schema, r.runner, settings.max_parameters_bytes),
        )
        for r in rows
    }


def lock_lines(session: Session, keys: list[tuple[int, str]]) -> dict[tuple[int, str], Any]:
    """Create-or-lock every line at once, in the order given (sort them by (action id,
    partition key), the one order of every multi-line transaction); the rows come back as
    they are under the lock."""
    rows = session.execute(
        text("""
            INSERT INTO queues AS q (action_id, partition_key)
            SELECT a, k FROM unnest(CAST(:actions AS integer[]), CAST(:keys AS text[])) AS u(a, k)
            ON CONFLICT (action_id, partition_key) DO UPDATE SET last_updated = q.last_updated
            RETURNING q.id, q.action_id, q.partition_key, q.next_seq, q.queue_length
        """),
        {"actions": [a for a, _ in keys], "keys": [k for _, k in keys]},
    ).all()
    return {(r.action_id, r.partition_key): r for r in rows}


def _insert(
    session: Session, taken: dict[int, int], rows: list[dict[str, Any]]
) -> dict[tuple[int, int], int]:
    """Count the taken seqs on their lines and insert the executions, in one statement;
    returns each new execution's id by (queue_id, seq). The rows travel as one JSON
    document: cheaper to encode and to parse than one array per column."""
    if not rows:
        return {}
    inserted = session.execute(
        text("""
            WITH bumped AS (
                UPDATE queues q SET next_seq = q.next_seq + b.n,
                    queue_length = q.queue_length + b.n,
                    total_enqueued = q.total_enqueued + b.n,
                    last_updated = clock_timestamp()
                FROM unnest(CAST(:lines AS integer[]), CAST(:counts AS integer[])) AS b(id, n)
                WHERE q.id = b.id
            )
            INSERT INTO executions (action_id, queue_id, seq, priority, status, parameters,
                                    enqueued_at, queued_at)
            SELECT r.a, r.q, r.s, r.p, 'queued', r.d, clock_timestamp(), clock_timestamp()
            FROM jsonb_to_recordset(CAST(:rows AS jsonb))
                AS r(a integer, q integer, s bigint, p integer, d jsonb)
            ORDER BY r.q, r.s
            RETURNING id, queue_id, seq
        """),
        {"lines": list(taken), "counts": list(taken.values()), "rows": _json(rows)},
    ).all()
    return {(r.queue_id, r.seq): r.id for r in inserted}


def _full(action: _Action, key: str) -> QueueFull:
    return QueueFull(
        f"the line of {action.ref}{f' [{key}]' if key else ''} is full "
        f"({action.limits.max_queue_length} waiting); retry later or raise max_queue_length"
    )


def _validated(
    session: Session, settings: Settings, requests: Sequence[Any], errors: dict[int, UsherError]
) -> list[_Item]:
    """Items that pass every check made before taking a place in line; errors by index."""
    checked: list[tuple[int, str, Any, int]] = []
    for index, request in enumerate(requests):
        try:
            checked.append((index, *fields(request)))
        except UsherError as error:
            errors[index] = error
    known = _actions(session, settings, {ref for _, ref, _, _ in checked}) if checked else {}
    items = []
    for index, ref, params, priority in checked:
        action = known.get(ref)
        if action is None:
            errors[index] = UnknownAction(f"no action named {ref!r}; see `usher packs load`")
            continue
        try:
            items.append(_Item(index, action, action.validate(params), priority))
        except InvalidParameters as error:
            errors[index] = error
    return items


def enqueue_many(session: Session, settings: Settings, requests: Sequence[Any]) -> Intake:
    """Enqueue each ``{action, parameters, priority}`` request that can be; see the module.

    A line takes what it has room for, then admits; when that admission granted slots (so
    made room) and items are left, the line takes more: exactly what the same requests sent
    one by one would get.
    """
    errors: dict[int, UsherError] = {}
    groups: dict[tuple[int, str], list[_Item]] = {}
    for item in _validated(session, settings, requests, errors):
        key = limits.partition_key(item.action.limits.partition_by, item.params)
        groups.setdefault((item.action.id, key), []).append(item)
    placed: dict[int, tuple[int, int]] = {}  # index -> (execution id, seq)
    grants: list[admission.Grant] = []
    pending = sorted(groups)
    while pending:
        pending, granted = _round(session, groups, pending, placed)
        grants += granted
    for (_, key), left in groups.items():
        for item in left:
            errors[item.index] = _full(item.action, key)
    scheduled = {g.execution_id for g in grants}
    results = []
    for index in range(len(requests)):
        if index in errors:
            results.append(ItemResult(index, error=errors[index]))
        else:
            execution_id, seq = placed[index]
            status = "scheduled" if execution_id in scheduled else "queued"
            results.append(ItemResult(index, execution_id, seq, status))
    return Intake(results, grants)


def _round(
    session: Session,
    groups: dict[tuple[int, str], list[_Item]],
    keys: list[tuple[int, str]],
    placed: dict[int, tuple[int, int]],
) -> tuple[list[tuple[int, str]], list[admission.Grant]]:
    """Lock these lines, give each group's first items the room there is, admit; returns
    the lines that made room and still have items, and the grants."""
    lines = lock_lines(session, keys)
    actions = {key: groups[key][0].action for key in keys}
    taken: dict[int, int] = {}
    rows: list[dict[str, Any]] = []
    indexes: list[int] = []
    for key in keys:
        group, line = groups[key], lines[key]
        room = max(actions[key].limits.max_queue_length - line.queue_length, 0)
        take, groups[key] = group[:room], group[room:]
        taken[line.id] = len(take)
        for n, item in enumerate(take):
            indexes.append(item.index)
            seq = line.next_seq + n + 1
            rows.append(
                {"a": item.action.id, "q": line.id, "s": seq, "p": item.priority, "d": item.params}
            )
    ids = _insert(session, {q: n for q, n in taken.items() if n}, rows)
    for index, row in zip(indexes, rows, strict=True):
        placed[index] = (ids[(row["q"], row["s"])], row["s"])
    again: list[tuple[int, str]] = []
    grants: list[admission.Grant] = []
    for key in keys:
        action, queue_id = actions[key], lines[key].id
        if not taken[queue_id]:
            continue  # full: nothing new to admit, and no room to make
        line = admission.Line(
            queue_id, action.ref, action.timeout_s, action.limits, action.retry, action.paused
        )
        granted = admission.admit(session, line)
        grants += granted
        if granted and groups[key]:
            again.append(key)
    return again, grants


def _json(value: Any) -> str:
    return json.dumps(value, default=str)
