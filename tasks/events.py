"""Process stored events on queue ``usher.events``: rules -> enforcements -> executions."""

from __future__ import annotations

import logging

from celery import current_app, shared_task

from app import celery as usher_celery
from app import db
from policies import events
from tasks import context

log = logging.getLogger(__name__)


@shared_task(name="usher.process_event", acks_late=True, ignore_result=True)
def process_event(event_id: int) -> int:
    with db.unit_of_work(context.engine()) as session:
        processed = events.process(session, context.settings(), event_id)
    usher_celery.publish(current_app, processed.grants)
    return len(processed.enforcements)


@shared_task(name="usher.process_events", acks_late=True, ignore_result=True)
def process_events(event_ids: list[int]) -> int:
    """A batch from ``POST /api/v1/events/batch``, in one transaction.

    Should the batch fail (a deadlock, one event whose processing raises), each event is
    taken on its own, so one bad event never holds back the others; what still fails stays
    unprocessed and the sweeper publishes it again.
    """
    try:
        with db.unit_of_work(context.engine()) as session:
            processed = events.process_many(session, context.settings(), event_ids)
    except Exception:
        log.exception("a batch of %d events failed; processing them one by one", len(event_ids))
        return sum(_one(event_id) for event_id in event_ids)
    if processed is None:
        return 0
    usher_celery.publish(current_app, processed.grants)
    return len(processed.enforcements)


def _one(event_id: int) -> int:
    try:
        return int(process_event(event_id))
    except Exception:
        log.exception("event %s failed; the sweeper will publish it again", event_id)
        return 0
