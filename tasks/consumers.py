"""Workers consume every action's queue ``usher.<installation>.action.<ref>``, or only the
pinned ones.

``add_consumer`` state lives only in a worker's memory, so each worker adds every known
queue when it is ready and re-checks Postgres every few seconds for actions registered
since. Queues are added from the consumer's own thread (a control command the worker sends
to itself), never from the timer thread, because the consumer is not thread-safe.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from typing import Any, ClassVar

from celery import bootsteps, signals
from celery.worker.control import control_command

from app import celery as usher_celery
from app import db
from policies import recovery
from tasks import context

log = logging.getLogger(__name__)

REFRESH_S = 2.0
REFRESH_COMMAND = "usher_refresh_queues"


def wanted_queues(app: Any) -> set[str]:
    pins = [p for p in (app.conf.get("usher_actions") or []) if p]
    with db.unit_of_work(context.engine()) as session:
        refs = recovery.action_refs(session)
    if pins:
        refs = [r for r in refs if any(fnmatch.fnmatchcase(r, p) for p in pins)]
    return {usher_celery.queue_name(app, r) for r in refs}


def consuming(consumer: Any) -> set[str]:
    task_consumer = consumer.task_consumer
    return {q.name for q in task_consumer.queues} if task_consumer is not None else set()


def refresh(consumer: Any) -> list[str]:
    missing = sorted(wanted_queues(consumer.app) - consuming(consumer))
    for name in missing:
        consumer.add_task_queue(name)
    return missing


@control_command(name=REFRESH_COMMAND)
def refresh_queues(state: Any, **_: Any) -> dict[str, Any]:
    """Add a consumer for every action queue this worker should consume and does not yet."""
    return {"ok": refresh(state.consumer)}


@signals.worker_ready.connect
def on_worker_ready(sender: Any = None, **_: Any) -> None:
    try:
        added = refresh(sender)
    except Exception:
        log.exception("could not read the action queues; will retry")
        added = []
    log.info("usher: consuming %d action queue(s) at start", len(added))


class ActionQueueWatcher(bootsteps.StartStopStep):
    """Every REFRESH_S, if Postgres knows a queue this worker lacks, ask the consumer to add it."""

    requires: ClassVar[set[str]] = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._watch, args=(parent,), name="usher-queue-watcher", daemon=True
        )
        self._thread.start()

    def stop(self, parent: Any) -> None:
        self._stop.set()

    shutdown = stop

    def _watch(self, consumer: Any) -> None:
        while not self._stop.wait(REFRESH_S):
            try:
                if wanted_queues(consumer.app) - consuming(consumer):
                    consumer.app.control.broadcast(REFRESH_COMMAND, destination=[consumer.hostname])
            except Exception:
                log.warning("usher: checking action queues failed; will retry", exc_info=True)
