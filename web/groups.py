"""The group commits of this app's single requests (``web.grouped``): executions, events
and webhook deliveries, each one group per app (so per process), made on first use. A batch
runs in the request thread that leads it, inside that request's app context."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import current_app, g, request

import web
from app import audit
from app import celery as usher_celery
from app.errors import UsherError
from policies import admission, events, idempotency, webhooks
from web import grouped, settings, unit_of_work

GROUPS = "usher_groups"
Outcome = TypeVar("Outcome")
_made = threading.Lock()
_publishers = threading.local()


def submit(group: grouped.Group[Single, Outcome], asked: Any) -> Outcome:
    """This request's outcome from ``group``: its audit row was written by its batch (so
    web.audit skips it), unless the batch failed as a whole (then the hook writes it)."""
    outcome = group.submit(Single.of_request(asked))
    g.audited = True
    return outcome


def _group(name: str, run: Any) -> grouped.Group[Any, Any]:
    found: dict[str, grouped.Group[Any, Any]] = current_app.extensions.setdefault(GROUPS, {})
    if name not in found:
        with _made:
            found.setdefault(name, grouped.Group(run))
    return found[name]


def publisher() -> usher_celery.Publisher:
    """This thread's long-lived producer (as a worker process keeps one): a leader sends its
    batch's grants on it, without taking one from the pool each time."""
    app = current_app.config["USHER_CELERY"]
    found: usher_celery.Publisher | None = getattr(_publishers, "publisher", None)
    if found is None or found.app is not app:
        found = _publishers.publisher = usher_celery.Publisher(app)
    return found


@dataclass(frozen=True)
class Single:
    """One request of a group: what it asks (a body, or a trigger and payload), who asks,
    and its audit row's verb and target (recorded in the batch's transaction)."""

    asked: Any
    actor: str
    verb: str
    target: str

    @classmethod
    def of_request(cls, asked: Any) -> Single:
        """This request's, in its own thread (it holds the request context)."""
        return cls(asked, web.actor(), request.endpoint or "", request.path)

    def row(self, status: int, code: str | None) -> tuple[str, str, str, str, dict[str, Any]]:
        outcome = f"{status} {code}" if code else str(status)
        return self.actor, self.verb, self.target, outcome, {"method": "POST", "status": status}


def _run_executions(batch: list[Single]) -> list[idempotency.Answer]:
    """One transaction for the batch's execution requests (each with its own key and
    requester) and their audit rows, then its grants sent."""
    with unit_of_work() as session:
        answers, taken = idempotency.enqueue(
            session,
            settings(),
            [single.asked for single in batch],
            requested_by=[single.actor for single in batch],
        )
        rows = []
        for single, answer in zip(batch, answers, strict=True):
            if answer.error is not None:
                rows.append(single.row(answer.error.status, answer.error.code))
            else:
                again = answer.replayed or bool((answer.body or {}).get("coalesced"))
                rows.append(single.row(200 if again else 202, None))
        audit.record_many(session, rows)
    usher_celery.after_intake(current_app.config["USHER_CELERY"], taken, publisher())
    _place(answers)
    return answers


def _place(answers: list[idempotency.Answer]) -> None:
    """Each new waiting answer's place in line, read after the commit in one statement:
    read while the batch held its lines, a deep line's count would hold the workers'
    finishes (and so the grants) back, the line would grow, and the count with it."""
    waiting = [
        a.body for a in answers if a.body and not a.replayed and a.body.get("status") == "queued"
    ]
    if not waiting:
        return
    with unit_of_work() as session:
        places = admission.positions(session, [int(body["id"]) for body in waiting])
    for body in waiting:
        body["position"] = places.get(int(body["id"]))


def executions() -> grouped.Group[Single, idempotency.Answer]:
    return _group("executions", _run_executions)


def _run_events(batch: list[Single]) -> list[int | Exception]:
    """The batch's events stored in one transaction with their audit rows, each checked on
    its own (a bad one is its request's error, before any statement: the others are
    stored); one message for all of them after the commit."""
    stored: list[int | Exception] = []
    rows = []
    limit = settings().max_payload_bytes
    with unit_of_work() as session:
        for single in batch:
            trigger, payload = single.asked
            try:
                stored.append(events.store(session, trigger, payload, limit))
                rows.append(single.row(202, None))
            except UsherError as error:
                stored.append(error)
                rows.append(single.row(error.status, error.code))
        audit.record_many(session, rows)
    app = current_app.config["USHER_CELERY"]
    usher_celery.send_events(app, [e for e in stored if isinstance(e, int)])
    return stored


def events_group() -> grouped.Group[Single, int | Exception]:
    return _group("events", _run_events)


@dataclass(frozen=True)
class Delivery:
    """A webhook delivery, verified in its request's thread: the batch only stores it."""

    hook: webhooks.Hook
    delivery: str | None  # its delivery id, if the sender gave one
    document: dict[str, Any]  # the event's payload (headers and body)


def _run_deliveries(batch: list[Single]) -> list[webhooks.Received | Exception]:
    """The batch's deliveries stored in one transaction, with their audit rows and their
    counts; one message for the new events after the commit. Those with a delivery id are
    claimed in (webhook, id) order, whatever their arrival: two processes' batches claiming
    the same ids then wait for each other in one order, never in a cycle."""
    received: list[webhooks.Received | Exception] = [ValueError("not stored")] * len(batch)
    limit = settings().max_payload_bytes

    def order(i: int) -> tuple[int, int, str]:
        asked: Delivery = batch[i].asked
        return (0, 0, "") if asked.delivery is None else (1, asked.hook.id, asked.delivery)

    counts: Counter[tuple[str, str]] = Counter()
    with unit_of_work() as session:
        for i in sorted(range(len(batch)), key=order):
            asked: Delivery = batch[i].asked
            try:
                received[i] = got = webhooks.receive(
                    session, asked.hook, asked.delivery, asked.document, limit
                )
                counts[(asked.hook.ref, "duplicate" if got.duplicate else "accepted")] += 1
            except UsherError as error:  # a payload too big, a webhook removed meanwhile
                received[i] = error
        rows = []
        for single, outcome in zip(batch, received, strict=True):
            if isinstance(outcome, UsherError):
                rows.append(single.row(outcome.status, outcome.code))
            else:
                assert isinstance(outcome, webhooks.Received)
                rows.append(single.row(200 if outcome.duplicate else 202, None))
        audit.record_many(session, rows)
        for (ref, outcome_name), n in sorted(counts.items()):
            webhooks.count(session, ref, outcome_name, n)
    new = [r.event_id for r in received if isinstance(r, webhooks.Received) and not r.duplicate]
    usher_celery.send_events(current_app.config["USHER_CELERY"], new)
    return received


def deliveries() -> grouped.Group[Single, webhooks.Received | Exception]:
    return _group("deliveries", _run_deliveries)
