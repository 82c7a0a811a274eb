"""Record outcomes from Celery signals: the fast path that frees a slot the moment a task ends.

Success and ordinary failure fire in the pool child; a killed child (WorkerLostError) and
``revoke(terminate=True)`` fire in the worker's main process; a hard time limit fires
``task_failure`` twice. ``admission.release`` is fenced by attempt and idempotent, so all of
these may fire in any number and order. Leases (the sweeper) are the guarantee behind them.
"""

from __future__ import annotations

import logging
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError
from celery import signals
from celery.app import app_or_default
from celery.exceptions import Terminated

from app import celery as usher_celery
from app import db, secretstore
from policies import admission
from tasks import context
from tasks.execute import SKIPPED
from tasks.runners import RunnerError, RunnerTimeout

log = logging.getLogger(__name__)

RESULT_LIMIT = 64 * 1024


def _execution_args(args: Any) -> tuple[int, int] | None:
    if isinstance(args, list | tuple) and len(args) == 2:
        return int(args[0]), int(args[1])
    return None


def _record(
    args: Any,
    outcome: str,
    result: Any = None,
    error: str | None = None,
    transient: bool = True,
) -> None:
    ids = _execution_args(args)
    if ids is None:
        return
    execution_id, attempt = ids
    # Whatever a runner saw may hold a secret it resolved: none of it reaches Postgres.
    result = secretstore.redact(result)
    error = secretstore.redact_text(error) if error is not None else None
    settings = context.settings()
    try:
        ended = admission.Ended(execution_id, attempt, outcome, result, error, transient)
        released = None
        if outcome in admission.FINISHES:
            # One statement, one round trip: the common case.
            released = context.hot().run(lambda c: admission.finish(c, settings, ended))
        if released is None:
            with db.unit_of_work(context.engine()) as session:
                released = admission.release(session, settings, ended)
    except Exception:
        # The lease runs out and the sweeper releases the slot: nothing is lost.
        log.exception("recording %s for execution %s failed", outcome, execution_id)
        return
    app = app_or_default()
    publish_release(app, released, context.publisher(app))


def publish_release(
    app: Any, released: admission.Released, publisher: usher_celery.Publisher | None = None
) -> None:
    """After the release committed: send its grants, its execution events, and for a retry
    the line's wake-up."""
    usher_celery.publish(app, released.grants, publisher)
    usher_celery.send_events(app, list(released.events))
    if released.queue_id is None:
        return
    if released.status == "retrying":
        usher_celery.wake_line(app, released.queue_id, released.retry_at)
    if released.rate_wake_at is not None:
        usher_celery.wake_line(app, released.queue_id, released.rate_wake_at)


def _outcome(exception: BaseException) -> tuple[str, str, bool]:
    """(outcome, error, transient) of an attempt that raised ``exception``."""
    name = type(exception).__name__
    if isinstance(exception, SoftTimeLimitExceeded | TimeLimitExceeded | RunnerTimeout):
        return "timed_out", f"timed out: {name}: {exception}", True
    if isinstance(exception, WorkerLostError):
        return "worker_lost", f"worker_lost: {exception}", True
    if isinstance(exception, Terminated):
        return "cancelled", f"terminated: {exception}", False
    if isinstance(exception, RunnerError) and exception.permanent:
        return "failed", f"permanent: {name}: {exception}", False
    return "failed", f"transient: {name}: {exception}", True


def _jsonable(result: Any) -> Any:
    import json

    # Masked before any cut: a secret that straddles one would keep the part left standing.
    try:
        text = json.dumps(secretstore.redact(result), default=str)
    except (TypeError, ValueError):
        return {
            "repr": secretstore.mask_edges(secretstore.redact_text(repr(result))[:RESULT_LIMIT], "")
        }
    if len(text) > RESULT_LIMIT:
        return {
            "truncated": secretstore.mask_edges(secretstore.redact_text(text)[:RESULT_LIMIT], "")
        }
    return secretstore.redact(json.loads(text))


@signals.task_success.connect
def on_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    if sender is None or sender.name != usher_celery.EXECUTE or result == SKIPPED:
        return
    _record(sender.request.args, "succeeded", result=_jsonable(result))


@signals.task_failure.connect
def on_failure(
    sender: Any = None, args: Any = None, exception: BaseException | None = None, **_: Any
) -> None:
    if sender is None or sender.name != usher_celery.EXECUTE or exception is None:
        return
    outcome, error, transient = _outcome(exception)
    # A runner's details (exit code and output, HTTP status and body) are kept as the result.
    details = getattr(exception, "details", None)
    _record(
        args,
        outcome,
        result=_jsonable(details) if details else None,
        error=error,
        transient=transient,
    )


@signals.task_revoked.connect
def on_revoked(sender: Any = None, request: Any = None, terminated: bool = False, **_: Any) -> None:
    if sender is None or sender.name != usher_celery.EXECUTE or request is None:
        return
    # A revoked message never runs: without this the sweeper would republish it forever.
    _record(
        request.args,
        "cancelled",
        error="revoked" + (" and terminated" if terminated else ""),
        transient=False,
    )
