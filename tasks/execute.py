"""The execute task: claim the slot granted in Postgres, run the action, keep the lease alive.

The outcome is recorded by the handlers in ``tasks.signals`` (success, failure, time limit,
revoke, worker lost), each a fenced, idempotent ``admission.release``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Task, shared_task

from app import db
from policies import admission
from tasks import context, runners

log = logging.getLogger(__name__)

SKIPPED = "usher:skipped"


@contextmanager
def heartbeat(execution_id: int, attempt: int) -> Iterator[threading.Event]:
    """Renew the lease every third of USHER_LEASE_S while the body runs.

    Yields an event that is set when this attempt lost the execution (cancelled, or the
    sweeper gave its slot away after the lease expired).
    """
    settings = context.settings()
    stop, lost = threading.Event(), threading.Event()

    def beat() -> None:
        while not stop.wait(settings.heartbeat_s):
            try:
                with db.unit_of_work(context.engine()) as session:
                    if not admission.heartbeat(session, execution_id, attempt, settings.lease_s):
                        lost.set()
                        return
            except Exception:
                log.warning("heartbeat for execution %s failed; retrying", execution_id)

    thread = threading.Thread(target=beat, name=f"usher-heartbeat-{execution_id}", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()
        thread.join(timeout=5)


@shared_task(name="usher.execute", bind=True, acks_late=True, ignore_result=True)
def execute(self: Task, execution_id: int, attempt: int) -> Any:
    settings = context.settings()
    worker = context.worker_name(self.request.hostname)
    with db.unit_of_work(context.engine()) as session:
        claimed = admission.claim(session, execution_id, attempt, worker, settings.lease_s)
    if claimed is None:
        # A duplicate or stale message (cancelled, republished, already running elsewhere).
        log.info("execution %s attempt %s is not ours to run; skipped", execution_id, attempt)
        return SKIPPED
    with heartbeat(execution_id, attempt):
        return runners.run(
            claimed.runner,
            claimed.runner_config,
            claimed.parameters,
            claimed.timeout_s,
            execution_id,
            attempt,
        )
