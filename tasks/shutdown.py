"""Graceful shutdown: SIGTERM lets running executions finish for USHER_SHUTDOWN_GRACE_S.

Celery's warm shutdown waits for running tasks without a limit. After the grace period the
worker's main process releases whatever this node still runs (outcome ``worker_lost``: the
retry policy decides between another attempt elsewhere and ``dead``), then asks Celery for
a cold shutdown, which terminates the pool. The killed attempts' late reports are fenced.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

from celery import current_app, signals

from app import db
from policies import admission, recovery
from tasks import context
from tasks.signals import publish_release

log = logging.getLogger(__name__)


def release_node(node: str) -> int:
    settings = context.settings()
    released = 0
    with db.unit_of_work(context.engine()) as session:
        running = recovery.running_on(session, node)
    for execution_id, attempt in running:
        with db.unit_of_work(context.engine()) as session:
            ended = admission.Ended(
                execution_id,
                attempt,
                "worker_lost",
                error=f"worker_lost: {node} shut down after {settings.shutdown_grace_s:g}s grace",
            )
            outcome = admission.release(session, settings, ended)
        publish_release(current_app, outcome)
        released += outcome.status is not None
    return released


# The grace starts at the first warm-shutdown signal; another SIGTERM (or a Ctrl-C after
# one) neither restarts it nor says so twice.
_grace_started = threading.Event()


@signals.worker_shutting_down.connect
def on_shutting_down(sender: Any = None, how: str = "", **_: Any) -> None:
    if how != "Warm" or not sender or _grace_started.is_set():
        return
    _grace_started.set()
    grace = context.settings().shutdown_grace_s

    def give_up() -> None:
        try:
            count = release_node(str(sender))
            log.warning("usher: grace period over; released %d running execution(s)", count)
        except Exception:
            log.exception("usher: could not release running executions; leases will")
        os.kill(os.getpid(), signal.SIGQUIT)  # cold shutdown: terminate the pool

    timer = threading.Timer(grace, give_up)
    timer.daemon = True
    timer.start()
    log.info("usher: finishing running executions for up to %gs", grace)
