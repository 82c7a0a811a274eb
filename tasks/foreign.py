"""A message of another installation (its ``usher_installation`` header names one that is
not this worker's): never run here and never dropped, but sent on, unchanged, to the same
queue of its own installation. Each installation's queues carry its id (``app.celery``), so
this happens only to a message published to the wrong queue: by hand, or by a tool that
moves messages between queues."""

from __future__ import annotations

import logging

from celery import Task

from app import celery as usher_celery

log = logging.getLogger(__name__)


def sent_on(task: Task) -> bool:
    """True if the message running as ``task`` was another installation's, now sent on."""
    theirs = task.request.get(usher_celery.INSTALLATION)
    ours = usher_celery.installation(task.app)
    if theirs is None or theirs == ours:
        return False
    here = (task.request.delivery_info or {}).get("routing_key") or ""
    queue = here.replace(f"usher.{ours}.", f"usher.{theirs}.", 1)
    task.apply_async(
        args=task.request.args,
        kwargs=task.request.kwargs,
        task_id=task.request.id,
        queue=queue,
        headers={usher_celery.INSTALLATION: theirs},
        time_limit=(task.request.timelimit or (None, None))[0],
        soft_time_limit=(task.request.timelimit or (None, None))[1],
    )
    log.warning(
        "a message of installation %s came in on %s: sent on to %s, not run here",
        theirs,
        here,
        queue,
    )
    return True
