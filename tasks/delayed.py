"""Delayed runs join their lines when due: from beat's loop (``tasks.beat``, every second at
most, sooner when one falls due) and, as the fallback, from the sweeper."""

from __future__ import annotations

import logging

from celery import Celery
from sqlalchemy import Engine

from app import celery as usher_celery
from app import db
from app.config import Settings
from policies import delayed

log = logging.getLogger(__name__)


def join_due(app: Celery, engine: Engine, settings: Settings) -> int:
    """Every delayed execution due now joins its line: one short transaction per line, its
    grants published after that commit. Returns how many joined."""
    joined = 0
    while True:
        with db.unit_of_work(engine) as session:
            due = delayed.due(session)
        for queue_id, ids in sorted(due.items()):
            with db.unit_of_work(engine) as session:
                done = delayed.join(session, settings, queue_id, ids)
            usher_celery.publish(app, done.grants)
            if done.wake_at is not None:  # a full rate-limit window
                usher_celery.wake_line(app, queue_id, done.wake_at)
            joined += len(done.joined)
            if done.rejected:
                log.warning(
                    "%d delayed execution(s) rejected: line %s full when they fell due",
                    len(done.rejected),
                    queue_id,
                )
        if sum(len(ids) for ids in due.values()) < delayed.BATCH:
            return joined
