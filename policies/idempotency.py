"""Idempotency keys: the same request sent again (a client's retry) makes nothing new.

A key (``Idempotency-Key``, or a batch item's ``key``) is scoped to what the request names:
``execution:<action ref>`` or ``event:<trigger>``. Within USHER_IDEMPOTENCY_TTL_S the same
key with the same request (its ``fingerprint``: parameters, priority, run_at or delay_s; an
event's payload) answers the first request's answer and creates nothing; with a different
request it is refused (``IdempotencyConflict``, 409). An older key is replaced on reuse.

Race-safe by the table's primary key (scope, key): the claim is an ``INSERT ... ON
CONFLICT`` in the transaction that creates the execution or event, so a second request with
the key waits on the first's insert until that commits (or rolls back, and then takes the
key itself), then reads the first's stored answer. Keys are claimed in (scope, key) order,
before any line, so two batches never deadlock on each other or on a line. A refused item
(unknown action, line full...) keeps no key: the same key may be sent again once fixed.
Functions take a session and never commit; the sweeper prunes expired keys (``prune``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app import sql
from app.config import Settings
from app.errors import IdempotencyConflict, InvalidRequest, UsherError
from policies import events, intake, requests

PRUNE_BATCH = 1000  # expired keys deleted per sweep
MAX_REF = 401  # no action is named longer (actions.ref): a longer name claims no key


@dataclass(frozen=True)
class Claim:
    scope: str
    key: str
    fingerprint: str


@dataclass(frozen=True)
class Taken:
    """A claim's outcome: ``new`` (this transaction holds the key: create, then
    ``remember``), or the first answer of the same request, or a conflict."""

    new: bool
    answer: Any = None
    conflict: IdempotencyConflict | None = None


def fingerprint(request: Any) -> str:
    """What tells one request from another with the same key: its canonical JSON's hash."""
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _conflict(claim: Claim) -> IdempotencyConflict:
    what = claim.scope.replace(":", " ", 1)
    return IdempotencyConflict(
        f"the Idempotency-Key {claim.key!r} was used for a different request to {what} "
        "(parameters, payload, priority or time differ); use a new key"
    )


def claim(session: Session, settings: Settings, claims: Sequence[Claim]) -> list[Taken]:
    """Take each key (distinct ones) for this transaction, or find it taken (see the
    module); outcomes in the order given."""
    if not claims:
        return []
    rows = [{"s": c.scope, "k": c.key, "f": c.fingerprint} for c in claims]
    ours = {
        (r.scope, r.key)
        for r in session.execute(
            sql.query("claim_idempotency_keys"),
            {"rows": sql.jsonb(rows), "ttl": settings.idempotency_ttl_s},
        )
    }
    seen = {}
    others = [r for r in rows if (r["s"], r["k"]) not in ours]
    if others:
        for r in session.execute(sql.query("idempotency_answers"), {"rows": sql.jsonb(others)}):
            seen[(r.scope, r.key)] = r
    taken = []
    for c in claims:
        if (c.scope, c.key) in ours:
            taken.append(Taken(True))
            continue
        first = seen[(c.scope, c.key)]
        if first.fingerprint != c.fingerprint:
            taken.append(Taken(False, conflict=_conflict(c)))
        else:
            taken.append(Taken(False, first.response))
    return taken


def _claim_all(
    session: Session, settings: Settings, claims: dict[int, Claim]
) -> tuple[dict[tuple[str, str], int], dict[int, Taken]]:
    """Claim the distinct keys of a request's items in (scope, key) order (so batches never
    deadlock): the first item of each key, and the outcome of each such first item."""
    first: dict[tuple[str, str], int] = {}  # a key given twice in one batch: its first item
    for index, c in claims.items():
        first.setdefault((c.scope, c.key), index)
    heads = [index for _, index in sorted(first.items())]
    outcomes = claim(session, settings, [claims[index] for index in heads])
    return first, dict(zip(heads, outcomes, strict=True))


def remember(session: Session, answers: Sequence[tuple[Claim, Any]]) -> None:
    """Store the answer of each key this transaction claimed."""
    if answers:
        rows = [{"s": c.scope, "k": c.key, "v": answer} for c, answer in answers]
        session.execute(sql.query("remember_idempotency_answers"), {"rows": sql.jsonb(rows)})


def forget(session: Session, claims: Sequence[Claim]) -> None:
    """Let go of keys this transaction claimed for requests that were refused."""
    if claims:
        rows = [{"s": c.scope, "k": c.key} for c in claims]
        session.execute(sql.query("forget_idempotency_keys"), {"rows": sql.jsonb(rows)})


def prune(session: Session, ttl_s: int, limit: int = PRUNE_BATCH) -> int:
    """Delete up to ``limit`` keys older than the TTL (the oldest first, by index)."""
    return len(
        session.execute(sql.query("prune_idempotency_keys"), {"ttl": ttl_s, "limit": limit}).all()
    )


# --- executions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One execution request's answer: ``body`` (id, status, seq, position, run_at) or the
    error; ``replayed`` when the key had answered it before (nothing was created)."""

    index: int
    body: dict[str, Any] | None = None
    error: UsherError | None = None
    replayed: bool = False


def _execution_claim(item: dict[str, Any]) -> Claim | None:
    """The claim of an item with a key (InvalidRequest for a bad one, or a bad item); None
    for an action name no action has (intake refuses it as unknown)."""
    body = requests.parse(requests.ExecutionItem, item)
    if len(body.action) > MAX_REF:
        return None
    shape = {
        "parameters": body.parameters,
        "priority": body.priority,
        "run_at": body.run_at.isoformat() if body.run_at is not None else None,
        "delay_s": body.delay_s,
    }
    return Claim(f"execution:{body.action}", body.key, fingerprint(shape))


def _body(result: intake.ItemResult, position: int | None) -> dict[str, Any]:
    body = {
        "id": result.execution_id,
        "status": result.status,
        "seq": result.seq,
        "position": position,
        "run_at": result.run_at.isoformat() if result.run_at is not None else None,
    }
    if result.coalesced:
        body["coalesced"] = True
    return body


def _execution_claims(
    items: Sequence[Any], key: str | None
) -> tuple[dict[int, Claim], dict[int, Answer]]:
    """The claims of the items with a key (their own, or ``key`` for all), by index; and
    the answers of those refused for it (a bad key)."""
    claims: dict[int, Claim] = {}
    refused: dict[int, Answer] = {}
    for index, item in enumerate(items):
        keyed = {**item, "key": key} if key is not None else item
        if not (isinstance(keyed, dict) and "key" in keyed):
            continue
        try:
            found = _execution_claim(keyed)
        except InvalidRequest as error:
            refused[index] = Answer(index, error=error)
            continue
        if found is not None:
            claims[index] = found
    return claims, refused


def enqueue(
    session: Session,
    settings: Settings,
    items: Sequence[Any],
    key: str | None = None,
    positions: Callable[[list[int]], dict[int, int]] | None = None,
    requested_by: str | Sequence[str | None] | None = None,
) -> tuple[list[Answer], intake.Intake]:
    """``intake.enqueue_many`` of these request bodies, each with its ``key`` field (a batch)
    or ``key`` (the header of a single request): a key seen before answers its first answer,
    one seen with a different request its conflict, a bad key its 400; the others are
    enqueued. ``positions`` (single requests': their places in line, by id, read at once)
    go in each new answer. The intake of those
    enqueued comes back too: its grants, stops and events to send after commit."""
    claims, answers = _execution_claims(items, key)
    first, taken = _claim_all(session, settings, claims)
    fresh = []
    for index in range(len(items)):
        t = taken.get(index)
        if index in answers:
            continue
        if t is not None and t.conflict is not None:
            answers[index] = Answer(index, error=t.conflict)
        elif t is not None and not t.new:
            answers[index] = Answer(index, t.answer, None, True)
        elif t is not None or index not in claims:
            fresh.append(index)
    who = requested_by if isinstance(requested_by, str | None) else [requested_by[i] for i in fresh]
    results = intake.enqueue_many(session, settings, [items[i] for i in fresh], who)
    kept, dropped = [], []
    made = [r.execution_id for r in results if r.error is None and r.execution_id is not None]
    places = positions(made) if positions is not None else {}
    for index, result in zip(fresh, results, strict=True):
        if result.error is not None:
            answers[index] = Answer(index, error=result.error)
            if index in taken:
                dropped.append(claims[index])
            continue
        assert result.execution_id is not None
        answers[index] = Answer(index, _body(result, places.get(result.execution_id)))
        if index in taken:
            kept.append((claims[index], answers[index].body))
    remember(session, kept)
    forget(session, dropped)
    for index, c in claims.items():  # the later items of a key given twice
        head = first[(c.scope, c.key)]
        if head != index:
            answers[index] = _follow(index, c, claims[head], answers[head])
    return [answers[i] for i in range(len(items))], results


def _follow(index: int, again: Claim, head: Claim, answer: Answer) -> Answer:
    if again.fingerprint != head.fingerprint:
        return Answer(index, error=_conflict(again))
    if answer.error is not None:
        return Answer(index, error=answer.error)
    return Answer(index, answer.body, None, True)


# --- events --------------------------------------------------------------------------------


def event_body(event_id: int) -> dict[str, Any]:
    """A new event's answer, as POST /events gives it before a worker has seen it."""
    return {
        "event_id": event_id,
        "processed": False,
        "failed": False,
        "failures": 0,
        "error": None,
        "enforcements": [],
    }


def _event_claim(trigger: Any, payload: Any, key: str) -> Claim:
    return Claim(f"event:{trigger}", key, fingerprint({"payload": payload}))


def store_event(
    session: Session, settings: Settings, trigger: str, payload: Any, key: str | None
) -> tuple[int, Any | None]:
    """Store an event (``events.store``) unless its key answered before: (event id, the
    first answer or None for a new event). IdempotencyConflict for a different request."""
    if key is None:
        return events.store(session, trigger, payload, settings.max_payload_bytes), None
    c = _event_claim(trigger, payload, key)
    (t,) = claim(session, settings, [c])
    if t.conflict is not None:
        raise t.conflict
    if not t.new:
        return int(t.answer["event_id"]), t.answer
    event_id = events.store(session, trigger, payload, settings.max_payload_bytes)
    remember(session, [(c, event_body(event_id))])
    return event_id, None


def restate(session: Session, trigger: str, key: str, answer: Any) -> None:
    """The first answer as it was given (after ``?wait``), replacing the one stored with the
    event: what a replay answers from now on."""
    remember(session, [(Claim(f"event:{trigger}", key, ""), answer)])


def store_events(
    session: Session, settings: Settings, items: Sequence[Any]
) -> tuple[list[int], list[int], list[int]]:
    """Store a batch of events all or none (``events.store_many``), each keyed item whose
    key answered before as its first event: (event ids in request order, the new ones, the
    indexes replayed). A key seen with a different request refuses the batch."""
    claims: dict[int, Claim] = {}
    for index, item in enumerate(items):
        if isinstance(item, dict) and "key" in item:
            try:  # the trigger and the key (the payload's bounds are store_many's)
                body = requests.parse(requests.EventItem, item)
            except InvalidRequest as error:
                raise InvalidRequest(f"events[{index}]: {error.message}") from None
            claims[index] = _event_claim(body.trigger, body.payload, body.key)
    first, taken = _claim_all(session, settings, claims)
    for index, c in claims.items():
        head = first[(c.scope, c.key)]
        conflict = taken[head].conflict if head == index else None
        if head != index and claims[head].fingerprint != c.fingerprint:
            conflict = _conflict(c)
        if conflict is not None:
            raise IdempotencyConflict(f"events[{index}]: {conflict.message}")
    old = {i: int(t.answer["event_id"]) for i, t in taken.items() if not t.new}
    fresh = [i for i in range(len(items)) if (i not in claims or i in taken) and i not in old]
    stored = _store_many(session, settings, items, fresh) if fresh else []
    ids = dict(zip(fresh, stored, strict=True)) | old
    remember(session, [(claims[i], event_body(ids[i])) for i in fresh if i in claims])
    replayed = set(old)
    for index, c in claims.items():  # the later items of a key given twice
        head = first[(c.scope, c.key)]
        if head != index:
            ids[index] = ids[head]
            replayed.add(index)
    return [ids[i] for i in range(len(items))], stored, sorted(replayed)


def _store_many(
    session: Session, settings: Settings, items: Sequence[Any], fresh: list[int]
) -> list[int]:
    """``events.store_many`` of some of the items; its error names the item's place in the
    request, not in the part stored."""
    try:
        return events.store_many(session, [items[i] for i in fresh], settings.max_payload_bytes)
    except UsherError as error:
        found = re.match(r"events\[(\d+)\]", error.message)
        if found is None or int(found[1]) >= len(fresh):
            raise
        raise type(error)(f"events[{fresh[int(found[1])]}]{error.message[found.end() :]}") from None
