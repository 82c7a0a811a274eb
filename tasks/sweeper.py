"""The sweeper, run by beat: the guarantee behind the signals' fast path."""

from __future__ import annotations

import logging
from typing import Any

from celery import current_app, shared_task

from app import celery as usher_celery
from app import db, sql
from policies import admission, emitted, idempotency, lines, recovery, retention
from tasks import context, signals
from tasks import delayed as delayed_runs

log = logging.getLogger(__name__)

SWEEP_LOCK = 724312


def sweep() -> dict[str, int]:
    """One pass; each repair is its own short transaction. Safe to run concurrently."""
    settings = context.settings()
    engine = context.engine()
    counts = {"lost_workers": 0, "republished": 0, "expired": 0, "granted": 0, "events": 0}
    with engine.connect() as lock_conn:
        if not lock_conn.execute(sql.query("sweep_try_lock"), {"lock": SWEEP_LOCK}).scalar():
            return counts  # another sweeper is at it
        try:
            for execution_id, attempt in _in_tx(recovery.expired_leases):
                with db.unit_of_work(engine) as session:
                    ended = admission.Ended(
                        execution_id, attempt, "worker_lost", error="worker_lost: lease expired"
                    )
                    released = admission.release(session, settings, ended, lease_expired=True)
                counts["lost_workers"] += released.status is not None
                signals.publish_release(current_app, released)
            republish_after = max(30.0, 2.0 * settings.lease_s)
            with db.unit_of_work(engine) as session:
                stale = recovery.unclaimed(session, republish_after)
            counts["republished"] = usher_celery.publish(current_app, stale)
            for queue_id in _in_tx(recovery.lines_to_tend):
                with db.unit_of_work(engine) as session:
                    line = lines.lock_line(session, settings, queue_id)
                    counts["expired"] += lines.expire(session, line)
                    # Due retries rejoin the line; a raised limit (pack reload) is granted
                    # here even on a line where nothing else happens.
                    admitted = lines.requeue_due(session, line)
                    expired_events = emitted.read(session)
                counts["granted"] += usher_celery.publish(current_app, admitted.grants)
                usher_celery.send_events(current_app, list(expired_events))
                if admitted.wake_at is not None:  # a full rate-limit window
                    usher_celery.wake_line(current_app, queue_id, admitted.wake_at)
            # Beat joins them as they fall due; this is the fallback (a beat held up, or none).
            counts["delayed_joined"] = delayed_runs.join_due(current_app, engine, settings)
            counts["idempotency_keys_pruned"] = _in_tx(
                lambda s: idempotency.prune(s, settings.idempotency_ttl_s)
            )
            counts["samples"] = _in_tx(recovery.sample_lines)
            # History past USHER_RETENTION_S, within a budget of this sweep's time.
            counts.update(retention.prune(engine, settings))
            _warn_without_autovacuum(engine, counts)
            if not settings.broker_url:
                counts["event_files_pruned"] = usher_celery.prune_event_files(settings.home)
            # One message, in id order: a task processes them in that order, and one that
            # races the original (slow, not lost) message waits on the first event's lock
            # and then finds them all done. One message per event could enqueue the
            # executions of neighbouring events out of their order.
            stale_events = _in_tx(lambda s: recovery.unprocessed_events(s, republish_after))
            usher_celery.send_events(current_app, stale_events)
            counts["events"] = len(stale_events)
        finally:
            lock_conn.execute(sql.query("sweep_unlock"), {"lock": SWEEP_LOCK})
            lock_conn.commit()
    if any(counts.values()):
        log.info("sweep: %s", counts)
    return counts


_VACUUM_CHECKED: list[bool] = []  # once per process


def _warn_without_autovacuum(engine: Any, counts: dict[str, int]) -> None:
    if _VACUUM_CHECKED or not any(v for k, v in counts.items() if k.endswith("_pruned")):
        return
    _VACUUM_CHECKED.append(True)
    if not retention.autovacuum_on(engine):
        log.warning(
            "autovacuum is off on this Postgres: the rows retention deletes stay as dead "
            "tuples and the history tables keep growing; turn it on (autovacuum = on), or "
            "VACUUM execution_requests, execution_state, attempts, events and enforcements "
            "regularly"
        )


def _in_tx(query: Any) -> Any:
    with db.unit_of_work(context.engine()) as session:
        return query(session)


@shared_task(name="usher.sweep", ignore_result=True)
def sweep_task() -> dict[str, int]:
    return sweep()


@shared_task(name="usher.wake_line", ignore_result=True)
def wake_line(queue_id: int) -> int:
    """A retry fell due on this line: move it back in line and grant what fits."""
    with db.unit_of_work(context.engine()) as session:
        line = lines.lock_line(session, context.settings(), queue_id)
        admitted = lines.requeue_due(session, line)
    sent = usher_celery.publish(current_app, admitted.grants)
    if admitted.wake_at is not None:  # still full: wake again when it frees up
        usher_celery.wake_line(current_app, queue_id, admitted.wake_at)
    return sent
