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
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app import queries, sql
from app.config import Settings
from app.errors import InvalidParameters, UsherError
from policies import actions, limits, lines, requests

# Items per batch request (API): enough to amortise the round trips, small enough for one
# short transaction.
MAX_BATCH = requests.MAX_BATCH


@dataclass(frozen=True)
class Request:
    """A request already checked for shape (``fields``), as the product's own callers make
    them; ``replay_of`` links a DLQ replay to the dead execution."""

    action: str
    parameters: Any
    priority: int = 0
    replay_of: int | None = None


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

    def __init__(self, items: Iterable[ItemResult], grants: list[lines.Grant]) -> None:
        super().__init__(items)
        self.grants = grants

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


def fields(request: Any) -> tuple[str, Any, int]:
    """(action, parameters, priority) of one request body, or InvalidRequest: the API's own
    request model, so a batch item and ``usher run`` are checked as a single request is."""
    body = requests.parse(requests.ExecutionRequest, request)
    return body.action, body.parameters, body.priority


def _insert(session: Session, rows: list[dict[str, Any]]) -> dict[tuple[int, int], int]:
    """Insert the executions in one statement; returns each new one's id by (queue_id, seq).
    The rows travel as one JSON document: cheaper to encode and to parse than one array per
    column."""
    if not rows:
        return {}
    inserted = session.execute(sql.query("insert_executions"), {"rows": sql.jsonb(rows)}).all()
    return {(r.queue_id, r.seq): r.id for r in inserted}


def _validated(
    session: Session, settings: Settings, requests: Sequence[Any], errors: dict[int, UsherError]
) -> list[_Item]:
    """Items that pass every check made before taking a place in line; errors by index."""
    checked: list[tuple[int, Request]] = []
    for index, request in enumerate(requests):
        try:
            checked.append(
                (index, request if isinstance(request, Request) else Request(*fields(request)))
            )
        except UsherError as error:
            errors[index] = error
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


def enqueue_many(session: Session, settings: Settings, requests: Sequence[Any]) -> Intake:
    """Enqueue each ``{action, parameters, priority}`` request (or ``Request``) that can be;
    see the module.

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
    grants: list[lines.Grant] = []
    pending = sorted(groups)
    while pending:
        pending, granted = _round(session, groups, pending, placed)
        grants += granted
    for (_, key), left in groups.items():
        for item in left:
            errors[item.index] = lines.full(
                item.action.ref, key, item.action.limits.max_queue_length
            )
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
            rows.append(
                {
                    "a": item.action.id,
                    "q": line.id,
                    "s": line.next_seq + n + 1,
                    "p": item.request.priority,
                    "d": item.params,
                    "r": item.request.replay_of,
                }
            )
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
