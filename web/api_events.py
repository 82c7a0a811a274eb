"""The events routes of ``/api/v1`` (on ``web.api.bp``): store one or a batch (with
idempotency keys), an event's state and enforcements, a replay of a failed one. Imported
by ``web.api`` where their routes stand in the OpenAPI document; the list of events is
defined here too and imported by ``web.api`` after the schedules' routes."""

from __future__ import annotations

import time
from typing import Any

from flask import current_app

from app import celery as usher_celery
from policies import events, idempotency, requests
from web import groups, schemas, settings, unit_of_work
from web.api import CONFLICT, READ_ONE, WRITE_ONE, bp


@bp.post(
    "/events",
    summary="Store an event; a worker matches rules (`?wait=S` waits up to S s)",
    responses={
        200: schemas.replayed(schemas.EventState),
        202: schemas.EventState,
        **schemas.WRITE,
        **CONFLICT,
    },
)
def post_event(
    query: schemas.EventQuery, header: requests.IdempotencyHeader, body: requests.Event
) -> Any:
    """Store the event and answer at once; a worker matches rules on queue usher.events.
    With an Idempotency-Key seen before (same trigger): 200 and the first answer. Events
    without a key that arrive together are stored in one transaction (``web.grouped``)."""
    key = header.idempotency_key
    if key is None:
        stored = groups.submit(groups.events_group(), (body.trigger, body.payload))
        if isinstance(stored, Exception):
            raise stored
        return _event(stored, query.wait), 202
    with unit_of_work() as session:
        event_id, first = idempotency.store_event(
            session, settings(), body.trigger, body.payload, key
        )
    if first is not None:
        return first, 200
    usher_celery.send_event(current_app.config["USHER_CELERY"], event_id)
    answer = _event(event_id, query.wait)
    if key is not None and answer != idempotency.event_body(event_id):
        with unit_of_work() as session:  # a replay answers what this one did
            idempotency.restate(session, body.trigger, key, answer)
    return answer, 202


@bp.post(
    "/events/batch",
    summary="Store up to 1000 events at once (all or none); one worker message",
    responses={
        200: schemas.replayed(schemas.EventIds),
        202: schemas.EventIds,
        **schemas.WRITE,
        **CONFLICT,
    },
)
def post_events(body: requests.EventBatch) -> Any:
    """A bad event refuses the batch (400 naming the first bad one); so does a key seen
    with a different event (409). A key seen before gives its first event's id."""
    with unit_of_work() as session:
        event_ids, stored, replayed = idempotency.store_events(session, settings(), body.events)
    usher_celery.send_events(current_app.config["USHER_CELERY"], stored)
    answer = {"event_ids": event_ids, "count": len(event_ids), "replayed": replayed}
    return answer, 200 if len(replayed) == len(event_ids) else 202


@bp.get(
    "/events/<int:event_id>",
    summary="An event and its enforcements",
    responses={200: schemas.EventState, **READ_ONE},
)
def get_event(path: schemas.EventPath) -> Any:
    return _event(path.event_id, 0)


@bp.post(
    "/events/<int:event_id>/replay",
    summary="Process an event that failed for good again, its tries given back",
    responses={
        200: schemas.EventState,
        **WRITE_ONE,
        409: schemas.error("The event has not failed"),
    },
)
def replay_event(path: schemas.EventPath) -> Any:
    with unit_of_work() as session:
        events.replay(session, path.event_id)
    usher_celery.send_event(current_app.config["USHER_CELERY"], path.event_id)
    return _event(path.event_id, 0)


def _event(event_id: int, wait_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + wait_s
    while True:
        with unit_of_work() as session:
            state = events.state(session, event_id)
            found = events.enforcements(session, event_id)
        done = state["processed"] or state["failed"]
        if done or time.monotonic() >= deadline:
            return {"event_id": event_id, **state, "enforcements": found}
        time.sleep(0.1)
