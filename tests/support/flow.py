"""Submit work the way the API does (enqueue, commit, publish) and wait for it to finish."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, text

from app import celery as usher_celery
from app import config, db
from policies import admission
from tests.support import invariants


def submit(
    engine: Engine,
    settings: config.Settings,
    app: Any,
    ref: str,
    parameters: list[dict[str, Any]],
    priority: int = 0,
) -> list[int]:
    ids = []
    for params in parameters:
        with db.unit_of_work(engine) as session:
            enqueued = admission.enqueue(session, settings, ref, params, priority)
        if app is not None:
            usher_celery.publish(app, enqueued.grants)
        ids.append(enqueued.execution_id)
    return ids


def wait_until(predicate: Any, timeout: float, interval: float = 0.2, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def wait_final(engine: Engine, refs: list[str], timeout: float) -> None:
    wait_until(
        lambda: all(invariants.unfinished(engine, ref) == 0 for ref in refs),
        timeout,
        what=f"every execution of {refs} to finish",
    )


def status(engine: Engine, execution_id: int) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(
                text("SELECT status FROM executions WHERE id = :id"), {"id": execution_id}
            ).scalar_one()
        )


def statuses(engine: Engine, ref: str) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("""SELECT e.status, count(*) FROM executions e JOIN actions a
                    ON a.id = e.action_id WHERE a.ref = :ref GROUP BY e.status"""),
            {"ref": ref},
        ).all()
    return {r[0]: r[1] for r in rows}


def finish(engine: Engine, settings: config.Settings, execution_id: int) -> list[int]:
    """Claim a granted execution and end it succeeded, as a worker would, without one; the
    executions its release granted."""
    with db.unit_of_work(engine) as session:
        assert admission.claim(session, execution_id, 1, "w", 30) is not None
    with db.unit_of_work(engine) as session:
        released = admission.release(
            session, settings, admission.Ended(execution_id, 1, "succeeded")
        )
    return [g.execution_id for g in released.grants]


def wait_for_lock_waits(
    engine: Engine,
    n: int = 1,
    timeout: float = 10,
    what: str = "no other transaction came to wait on a lock",
) -> None:
    """Until ``n`` other backends of this database wait on a lock (a row lock, in the tests);
    else fail with ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            waiting = conn.execute(
                text("""SELECT count(*) FROM pg_stat_activity
                        WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()
                          AND datname = current_database()""")
            ).scalar_one()
        if waiting >= n:
            return
        time.sleep(0.02)
    raise AssertionError(what)


class WaitingOnALock:
    """``work`` in another thread, started and left waiting on a lock this test holds."""

    def __init__(self, engine: Engine, work: Callable[[], Any]) -> None:
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(work,))
        self._thread.start()
        wait_for_lock_waits(engine)

    def _run(self, work: Callable[[], Any]) -> None:
        try:
            work()
        except BaseException as exc:
            self.errors.append(exc)

    def finished(self) -> list[BaseException]:
        """What ``work`` raised, once it is done (call after releasing the lock)."""
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the other transaction never finished"
        return self.errors
