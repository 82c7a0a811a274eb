"""The Celery app, the broker default, and publishing grants after commit."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Protocol

from celery import Celery
from celery.app import trace
from kombu import Queue

from app import db, fs_broker, logs, secretstore, sql
from app.config import Settings

log = logging.getLogger(__name__)

EXECUTE = "usher.execute"
SWEEP = "usher.sweep"
WAKE = "usher.wake_line"
PROCESS_EVENT = "usher.process_event"
PROCESS_EVENTS = "usher.process_events"
# Every queue of an installation carries its id (the installation table, made once by the
# migrations): two installations on one broker vhost never share a queue, so neither takes
# the other's messages. The message says it too (its INSTALLATION header).
EVENTS_QUEUE = "usher.{installation}.events"
DEFAULT_QUEUE = "usher.{installation}.default"
ACTION_QUEUE = "usher.{installation}.action.{ref}"
INSTALLATION = "usher_installation"
# Seconds between a soft time limit (the runner is asked to stop) and the hard kill.
HARD_KILL_GRACE_S = 5


class Grant(Protocol):
    """What ``policies.admission`` hands back for each slot it grants."""

    @property
    def execution_id(self) -> int: ...
    @property
    def attempt(self) -> int: ...
    @property
    def action_ref(self) -> str: ...
    @property
    def timeout_s(self) -> int | None: ...


class Stop(Protocol):
    """A running execution cancelled by another's request (``policies.busy``)."""

    @property
    def execution_id(self) -> int: ...
    @property
    def attempt(self) -> int: ...
    @property
    def previous_status(self) -> str: ...


class Taken(Protocol):
    """What an intake leaves to do after its commit (``policies.intake.Intake``, and what
    carries its parts: rules' and schedules' processing)."""

    @property
    def grants(self) -> Iterable[Grant]: ...
    @property
    def stopped(self) -> Iterable[Stop]: ...
    @property
    def events(self) -> Iterable[int]: ...


def installation(app: Celery) -> str:
    """The id of the installation whose Postgres ``app``'s settings name, read once."""
    found: str | None = app.conf.get("usher_installation")
    if found is None:
        settings: Settings = app.conf.usher_settings
        with db.engine_for(db.database_url(settings)).connect() as conn:
            found = str(conn.execute(sql.query("installation_id")).scalar_one())
        app.conf.usher_installation = found
    return found


def queue_name(app: Celery, action_ref: str) -> str:
    return ACTION_QUEUE.format(installation=installation(app), ref=action_ref)


def events_queue(app: Celery) -> str:
    return EVENTS_QUEUE.format(installation=installation(app))


def default_queue(app: Celery) -> str:
    return DEFAULT_QUEUE.format(installation=installation(app))


def own_queues(app: Celery) -> list[str]:
    """What every worker of the installation consumes beside the action queues."""
    return [default_queue(app), events_queue(app)]


class Router:
    """Celery's ``task_routes``: the sweeper's and the events' tasks to the installation's
    own queues (read on first use, so making the app needs no database); their messages
    carry its id."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def __call__(self, name: str, *args: object, **kwargs: object) -> dict[str, object] | None:
        if name in (PROCESS_EVENT, PROCESS_EVENTS):
            return {"queue": events_queue(self.app)}
        if name in (SWEEP, WAKE):
            return {"queue": default_queue(self.app)}
        return None


def filesystem_transport_options(home: Path) -> dict[str, str]:
    root = home.resolve() / "broker"
    folders = {"data": root / "queue", "control": root / "control", "processed": root / "done"}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(folders["data"]),
        "data_folder_out": str(folders["data"]),
        "control_folder": str(folders["control"]),
        "processed_folder": str(folders["processed"]),
        "store_processed": False,  # type: ignore[dict-item]
        # Kombu polls a virtual transport once a second by default: too slow for a line
        # whose next grant waits on the previous completion.
        "polling_interval": 0.05,  # type: ignore[dict-item]
    }


def _quiet_results() -> None:
    # Celery logs every task's return value at INFO ("succeeded in 0.1s: {...}"): an
    # execution's result may echo what a request or a secret put into it. Postgres keeps
    # the (redacted) result; the log line keeps the name, id and time only.
    trace.LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"


def create(settings: Settings) -> Celery:
    """Build the app; nothing connects until a worker starts or a message is sent."""
    secretstore.install_log_redaction(settings.secrets_dir)
    logs.for_celery(settings)
    _quiet_results()
    app = Celery(
        "usher",
        include=[
            "tasks.execute",
            "tasks.sweeper",
            "tasks.signals",
            "tasks.consumers",
            "tasks.events",
            "tasks.shutdown",
        ],
    )
    transport_options: dict[str, object] = {}
    broker = settings.broker_url
    if not broker:
        fs_broker.register()
        # kombu's filesystem transport, writing each message atomically (app.fs_broker);
        # a hostname keeps kombu from warning per connect.
        broker = f"{fs_broker.ALIAS}://localhost//"
        transport_options.update(filesystem_transport_options(settings.home))
    elif broker.startswith(("redis://", "rediss://")):
        # Redis redelivers an unacked message only after the visibility timeout; Postgres
        # decides outcomes, so a long timeout is safe and avoids double delivery.
        transport_options.update(
            visibility_timeout=3600, unacked_restore_interval=2, unacked_restore_throttle=1
        )
    app.conf.update(
        broker_url=broker,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        # Task events cost the worker's main process three publishes per task (a third of its
        # time in the benchmark). Off, as in plain Celery; Flower switches them on while it
        # runs (its enable_events), and `usher worker -E` keeps them on.
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # Celery waits this long for a killed pool process's result before reporting
        # WorkerLostError (10 s by default). Results are ignored here, so waiting only
        # delays freeing the slot.
        worker_lost_wait=1.0,
        # Every task of Usher's is routed (Router); this one catches only a stranger's.
        task_default_queue="usher.default",
        # An event's processing is bounded: a try that runs past it is stopped and counted
        # as a failure (policies.events.record_failure).
        task_annotations={
            name: {
                "soft_time_limit": settings.event_time_limit_s,
                "time_limit": settings.event_time_limit_s + HARD_KILL_GRACE_S,
            }
            for name in (PROCESS_EVENT, PROCESS_EVENTS)
        },
        task_routes=(Router(app),),
        worker_hijack_root_logger=False,
        beat_schedule={
            "usher-sweep": {
                "task": SWEEP,
                "schedule": settings.sweep_interval_s,
                "options": {"expires": max(settings.sweep_interval_s * 5, 5)},
            }
        },
        usher_settings=settings,
    )
    return app


class Publisher:
    """A worker process's long-lived producer.

    Acquiring a producer from Celery's pool and binding the queue to declare it cost a pool
    process more than the publish itself (docs/performance.md); a process that publishes a
    grant after every completion keeps one. Use it from one thread; ``close`` it when the
    process ends.
    """

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.connection = app.connection_for_write()
        self.producer = app.amqp.Producer(self.connection)

    def declared(self, queue: Queue) -> bool:
        # Kept in kombu's own record of this connection's declarations, which it empties
        # whenever the connection is closed or re-established (a broker restart may have
        # lost the queue): the next grant then declares it again.
        return queue.name in self.connection.declared_entities

    def note_declared(self, queue: Queue) -> None:
        self.connection.declared_entities.add(queue.name)

    def close(self) -> None:
        self.connection.release()


def publish(app: Celery, grants: Iterable[Grant], publisher: Publisher | None = None) -> int:
    """Send ``execute(id, attempt)`` for each grant; call only after the grant committed.

    A failed publish is logged, not raised: the execution stays ``scheduled`` in Postgres and
    the sweeper republishes it. Duplicates are harmless (claim is a compare-and-set).

    The message is Celery's own (``amqp.create_task_message``), published without
    ``send_task``'s routing, option merging and ``saferepr`` of the arguments; on
    ``publisher``'s producer when given, else on one from the app's pool.
    """
    sent = 0
    grants = list(grants)
    if not grants:
        return 0
    conf = app.conf
    try:
        with (
            nullcontext(publisher.producer) if publisher else app.producer_or_acquire()
        ) as producer:
            for grant in grants:
                limits: tuple[float | None, float | None] = (None, None)
                if grant.timeout_s:
                    limits = (grant.timeout_s + HARD_KILL_GRACE_S, grant.timeout_s)
                args = [grant.execution_id, grant.attempt]
                queue = app.amqp.queues[queue_name(app, grant.action_ref)]
                # The queue is declared (within the publish's retries) until it is known to
                # exist, so a grant is never dropped for lack of a queue no worker consumes.
                declared = publisher is not None and publisher.declared(queue)
                message = app.amqp.create_task_message(
                    task_id(grant.execution_id, grant.attempt),
                    EXECUTE,
                    args,
                    {},
                    time_limit=limits[0],
                    soft_time_limit=limits[1],
                    argsrepr=repr(args),
                    kwargsrepr="{}",
                    ignore_result=True,
                )
                message.headers[INSTALLATION] = installation(app)
                producer.publish(
                    message.body,
                    exchange="",
                    routing_key=queue.name,
                    declare=None if declared else [queue],
                    serializer=conf.task_serializer,
                    headers=message.headers,
                    delivery_mode=conf.task_default_delivery_mode,
                    retry=conf.task_publish_retry,
                    retry_policy=conf.task_publish_retry_policy,
                    **message.properties,
                )
                if publisher is not None and not declared:
                    publisher.note_declared(queue)
                sent += 1
    except Exception:
        log.exception("publishing %d grant(s) failed; the sweeper will republish", len(grants))
    return sent


def task_id(execution_id: int, attempt: int) -> str:
    return f"usher-{execution_id}-{attempt}"


def terminate(app: Celery, execution_id: int, attempt: int, previous_status: str) -> None:
    """Stop the worker process running a cancelled execution (its slot is already free)."""
    if previous_status != "running":
        return  # a queued or scheduled one never starts: claim refuses it
    try:
        app.control.revoke(task_id(execution_id, attempt), terminate=True, signal="SIGTERM")
    except Exception:
        log.exception("could not send revoke for execution %s", execution_id)


def after_cancel(
    app: Celery,
    execution_id: int,
    attempt: int,
    previous_status: str,
    grants: Iterable[Grant],
    events: Iterable[int],
) -> None:
    """After a cancel committed: stop its worker, send the grants of the slot it freed, and
    the execution events it emitted."""
    terminate(app, execution_id, attempt, previous_status)
    publish(app, grants)
    send_events(app, list(events))


def after_intake(app: Celery, taken: Taken, publisher: Publisher | None = None) -> None:
    """After an intake committed: send its grants (on ``publisher`` if given), stop the
    workers of the running executions it cancelled (``when_busy: cancel_running``), send its
    execution events."""
    publish(app, taken.grants, publisher)
    for stop in taken.stopped:
        terminate(app, stop.execution_id, stop.attempt, stop.previous_status)
    send_events(app, list(taken.events))


def wake_line(app: Celery, queue_id: int, at: datetime | None) -> None:
    """Ask a worker to re-admit a line at ``at`` (a retry falls due).

    Only a hint: the retry's state and due time are in Postgres, and the sweeper finds it
    anyway within one sweep if this message is lost.
    """
    try:
        app.send_task(WAKE, args=[queue_id], eta=at, expires=None)
    except Exception:
        log.exception("could not send the wake-up for line %s; the sweeper will", queue_id)


def send_event(app: Celery, event_id: int) -> None:
    try:
        app.send_task(PROCESS_EVENT, args=[event_id], headers={INSTALLATION: installation(app)})
    except Exception:
        log.exception("could not publish event %s; the sweeper will", event_id)


def send_events(app: Celery, event_ids: list[int]) -> None:
    """One message for a whole batch of stored events (the sweeper covers a lost one too)."""
    if not event_ids:
        return
    try:
        app.send_task(PROCESS_EVENTS, args=[event_ids], headers={INSTALLATION: installation(app)})
    except Exception:
        log.exception("could not publish %d events; the sweeper will", len(event_ids))


def prune_event_files(home: Path, older_than_s: float = 300) -> int:
    """Delete stale task-event messages of the ``filesystem://`` broker.

    Flower (and ``celery events``) bind a ``celeryev.<id>`` queue that this transport never
    deletes; after they exit, every event is still written to it. Events nobody read for
    ``older_than_s`` are of no use to anyone: remove them so the folder cannot grow forever.
    """
    folder = home.resolve() / "broker" / "queue"
    if not folder.is_dir():
        return 0
    removed = 0
    cutoff = time.time() - older_than_s
    for path in folder.glob("*.celeryev.*.msg"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue  # a consumer took it meanwhile
    return removed
