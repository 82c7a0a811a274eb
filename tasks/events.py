"""Process a stored event on queue ``usher.events``: rules -> enforcements -> executions."""

from __future__ import annotations

from celery import current_app, shared_task

from app import celery as usher_celery
from app import db
from policies import events
from tasks import context


@shared_task(name="usher.process_event", acks_late=True, ignore_result=True)
def process_event(event_id: int) -> int:
    with db.unit_of_work(context.engine()) as session:
        processed = events.process(session, context.settings(), event_id)
    usher_celery.publish(current_app, processed.grants)
    return len(processed.enforcements)
