"""Process stored events on queue ``usher.events``: rules -> enforcements -> executions.

Each try is bounded by USHER_EVENT_TIME_LIMIT_S (Celery's time limits, app/celery.py). A try
that raises or runs out of time is counted on the event (``events.record_failure``): the
sweeper publishes it again until it has failed USHER_EVENT_MAX_FAILURES times, and then it
ends ``failed``, kept with its error for an operator to replay, never published again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError
from celery import Task, current_app, shared_task, signals

from app import celery as usher_celery
from app import db
from policies import events
from tasks import context, foreign

log = logging.getLogger(__name__)


@shared_task(name="usher.process_event", bind=True, acks_late=True, ignore_result=True)
def process_event(self: Task, event_id: int) -> int:
    if foreign.sent_on(self):
        return 0
    try:
        return _process(event_id)
    except Exception as error:
        _failed([event_id], error)
        return 0


def _process(event_id: int) -> int:
    with db.unit_of_work(context.engine()) as session:
        processed = events.process(session, context.settings(), event_id)
    usher_celery.after_intake(current_app, processed)
    return len(processed.enforcements)


@shared_task(name="usher.process_events", bind=True, acks_late=True, ignore_result=True)
def process_events(self: Task, event_ids: list[int]) -> int:
    """A batch from ``POST /api/v1/events/batch``, in one transaction.

    Should the batch fail (a deadlock, one event whose processing raises), each event is
    taken on its own, so one bad event never holds back the others. A batch that ran out of
    time has none left for that: each event is sent again as its own message.
    """
    if foreign.sent_on(self):
        return 0
    try:
        with db.unit_of_work(context.engine()) as session:
            processed = events.process_many(session, context.settings(), event_ids)
    except SoftTimeLimitExceeded:
        log.warning("a batch of %d events ran out of time; sending them one by one", len(event_ids))
        _send_each(event_ids)
        return 0
    except Exception:
        log.exception("a batch of %d events failed; processing them one by one", len(event_ids))
        return _one_by_one(event_ids)
    if processed is None:
        return 0
    usher_celery.after_intake(current_app, processed)
    return len(processed.enforcements)


def _one_by_one(event_ids: Sequence[int]) -> int:
    """Each event on its own, in order. The batch's time limit may run out in any of them,
    healthy or not: then the rest are sent as messages of their own, none counted failed."""
    done = 0
    for index, event_id in enumerate(event_ids):
        try:
            done += _process(event_id)
        except SoftTimeLimitExceeded:
            _send_each(event_ids[index:])
            return done
        except Exception as error:
            _failed([event_id], error)
    return done


def _send_each(event_ids: Sequence[int]) -> None:
    # Each with a time limit of its own: a poison event among them is found and counted alone.
    for event_id in event_ids:
        usher_celery.send_event(current_app, event_id)


def _failed(event_ids: Sequence[int], error: BaseException) -> None:
    reason = f"{type(error).__name__}: {error}"
    try:
        with db.unit_of_work(context.engine()) as session:
            ended = events.record_failure(session, context.settings(), event_ids, reason)
    except Exception:
        log.exception("could not count the failure of events %s", list(event_ids))
        return
    for event_id in event_ids:
        if event_id in ended:
            log.error(
                "event %s failed for good (%s); `usher events replay %s`",
                event_id,
                reason,
                event_id,
            )
        else:
            log.warning("event %s failed (%s); the sweeper will publish it again", event_id, reason)


@signals.task_failure.connect
def _killed(
    sender: Any = None, args: Any = None, exception: BaseException | None = None, **_: Any
) -> None:
    """A try that never returned (past the hard time limit, or its process died) is reported
    here, in the worker's main process. A single event's try is counted; a batch's names no
    culprit, so its events are sent again one by one and the culprit is found alone."""
    if sender is None or not isinstance(exception, TimeLimitExceeded | WorkerLostError):
        return
    if sender.name == usher_celery.PROCESS_EVENT and args:
        _failed([int(args[0])], exception)
    elif sender.name == usher_celery.PROCESS_EVENTS and args:
        _send_each([int(i) for i in args[0]])
