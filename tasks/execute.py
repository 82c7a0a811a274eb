"""The execute task: claim the slot granted in Postgres, run the action, keep the lease alive.

The outcome is recorded by the handlers in ``tasks.signals`` (success, failure, time limit,
revoke, worker lost), each a fenced, idempotent ``admission.release``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from billiard.pool import soft_timeout_sighandler
from celery import Task, shared_task

from app import secretstore
from policies import admission
from tasks import context, foreign, output, runners

log = logging.getLogger(__name__)

SKIPPED = "usher:skipped"


class Leases:
    """The attempts running in this process, and the one thread that renews their leases.

    Every USHER_HEARTBEAT_S the thread renews them all in one statement; an attempt that is
    no longer ours (cancelled, or given away after its lease expired) gets its ``lost`` event
    set, is dropped, and its runner is stopped (``_stop_runner``). A thread per process
    instead of one per execution keeps starting an execution cheap; the thread is made
    lazily, so a forked pool child makes its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[tuple[int, int], threading.Event] = {}
        self._thread: threading.Thread | None = None
        self._owner_pid: int | None = None

    @contextmanager
    def hold(self, execution_id: int, attempt: int) -> Iterator[threading.Event]:
        key, lost = (execution_id, attempt), threading.Event()
        with self._lock:
            self._held[key] = lost
            alive = self._thread is not None and self._thread.is_alive()
            if self._owner_pid != os.getpid() or not alive:
                # A forked child makes its own; one that died (it should not) is replaced.
                self._owner_pid = os.getpid()
                self._thread = threading.Thread(target=self._beat, name="usher-leases", daemon=True)
                self._thread.start()
        try:
            yield lost
        finally:
            with self._lock:
                self._held.pop(key, None)

    def _beat(self) -> None:
        while True:
            try:
                self._renew_all()
            except Exception:
                log.exception("renewing leases failed; retrying")
                time.sleep(1)

    def _renew_all(self) -> None:
        settings = context.settings()
        time.sleep(settings.heartbeat_s)
        with self._lock:
            held = dict(self._held)
        if not held:
            return
        renew = partial(admission.renew, held=list(held), lease_s=settings.lease_s)
        owned = context.hot().run(renew)
        for key in held.keys() - owned:
            with self._lock:
                # Still held: its runner has not returned, so it is this attempt that runs.
                if self._held.pop(key, None) is None:
                    continue
                held[key].set()
                stopped = _stop_runner()
            log.warning(
                "execution %s attempt %s is no longer ours (cancelled, or given away after "
                "its lease ran out); %s",
                *key,
                "its runner is stopped" if stopped else "this pool cannot stop its runner",
            )


def _stop_runner() -> bool:
    """Interrupt the task this pool process runs, as a soft time limit does.

    Only in a prefork pool process, where billiard's SIGUSR1 handler raises
    ``SoftTimeLimitExceeded`` in the task (a shell runner then kills its process group). In
    any other pool, SIGUSR1 would reach the worker itself, so the runner is left to end and
    its late report is refused by the attempt fence.
    """
    if signal.getsignal(signal.SIGUSR1) is not soft_timeout_sighandler:
        return False
    os.kill(os.getpid(), signal.SIGUSR1)
    return True


leases = Leases()


@shared_task(name="usher.execute", bind=True, acks_late=True, ignore_result=True)
def execute(self: Task, execution_id: int, attempt: int) -> Any:
    if foreign.sent_on(self):
        return SKIPPED
    settings = context.settings()
    worker = context.worker_name(self.request.hostname)
    claimed = context.hot().run(
        lambda c: admission.claim(c, execution_id, attempt, worker, settings.lease_s)
    )
    if claimed is None:
        # A duplicate or stale message (cancelled, republished, already running elsewhere).
        log.info("execution %s attempt %s is not ours to run; skipped", execution_id, attempt)
        return SKIPPED
    with (
        leases.hold(execution_id, attempt),
        output.writer.recording(
            claimed.runner, execution_id, attempt, settings.output_max_bytes
        ) as recorded,
        _masked(),
    ):
        # Masked here, not only when stored: Celery sends a task's result and exception to
        # Flower in its task events.
        return secretstore.redact(
            runners.run(
                claimed.runner,
                claimed.runner_config,
                claimed.parameters,
                schema=claimed.parameters_schema,
                timeout_s=claimed.timeout_s,
                execution_id=execution_id,
                attempt=attempt,
                secrets_dir=settings.secrets_dir,
                output=recorded,
            )
        )


@contextmanager
def _masked() -> Iterator[None]:
    """Re-raise an error whose message holds a secret as one that does not (same kind of
    failure: a RunnerError keeps its permanence and its masked details)."""
    try:
        yield
    except runners.RunnerError as error:
        message = secretstore.redact_text(str(error))
        details = secretstore.redact(error.details)
        if message == str(error) and details == error.details:
            raise
        raise type(error)(message, error.permanent, details) from None
    except Exception as error:
        message = secretstore.redact_text(str(error))
        if message == str(error):
            raise
        raise runners.RunnerError(f"{type(error).__name__}: {message}") from None
