"""The group commits of this app's single requests (``web.grouped``): executions and
events, each one group per app (so per process), made on first use. A batch runs in the
request thread that leads it, inside that request's app context."""

from __future__ import annotations

import threading
from typing import Any

from flask import current_app

from app import celery as usher_celery
from app.errors import UsherError
from policies import admission, events, idempotency
from web import grouped, settings, unit_of_work

GROUPS = "usher_groups"
_made = threading.Lock()
_publishers = threading.local()


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


def _run_executions(batch: list[tuple[dict[str, Any], str]]) -> list[idempotency.Answer]:
    """One transaction for the batch's execution requests (each with its own key and
    requester), then its grants sent."""
    with unit_of_work() as session:
        answers, taken = idempotency.enqueue(
            session,
            settings(),
            [request for request, _ in batch],
            position=lambda execution_id: admission.position(session, execution_id),
            requested_by=[actor for _, actor in batch],
        )
    usher_celery.after_intake(current_app.config["USHER_CELERY"], taken, publisher())
    return answers


def executions() -> grouped.Group[tuple[dict[str, Any], str], idempotency.Answer]:
    return _group("executions", _run_executions)


def _run_events(batch: list[tuple[str, Any]]) -> list[int | Exception]:
    """The batch's events stored in one transaction, each checked on its own (a bad one
    is its request's error, before any statement: the others are stored); one message for
    all of them after the commit."""
    stored: list[int | Exception] = []
    limit = settings().max_payload_bytes
    with unit_of_work() as session:
        for trigger, payload in batch:
            try:
                stored.append(events.store(session, trigger, payload, limit))
            except UsherError as error:
                stored.append(error)
    app = current_app.config["USHER_CELERY"]
    usher_celery.send_events(app, [e for e in stored if isinstance(e, int)])
    return stored


def events_group() -> grouped.Group[tuple[str, Any], int | Exception]:
    return _group("events", _run_events)
