"""``usher beat``'s scheduler: Celery's own (the sweeper's schedule), and the schedules of
the packs, fired in the beat process itself (``policies.schedules.fire_due``), and the
delayed runs that fell due joining their lines (``tasks.delayed``).

Each tick fires what is due in one transaction per batch, publishes the grants after the
commit, and sleeps until the next schedule or delayed run falls due by the database's clock,
never more than ``MAX_WAIT_S``: a schedule loaded or resumed meanwhile is seen within a second. Any
number of beats may run (two for high availability): the database makes each tick fire
once. Celery's schedule is kept in memory, not in a shelve file, so that two beats may share
one USHER_HOME; the sweeper's interval needs no memory across restarts.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from celery import beat

from app import celery as usher_celery
from app import db
from app.config import Settings
from policies import delayed, schedules
from tasks import delayed as delayed_runs

log = logging.getLogger(__name__)

MAX_WAIT_S = 1.0
# Never less: a schedule another beat holds stays due until that beat commits, and a beat
# that saw it due would otherwise spin on it.
MIN_WAIT_S = 0.02


def wait_s(next_due_s: float | None) -> float:
    """How long to sleep when the next schedule falls due in ``next_due_s`` (None: none)."""
    if next_due_s is None:
        return MAX_WAIT_S
    return min(max(next_due_s, MIN_WAIT_S), MAX_WAIT_S)


class Scheduler(beat.Scheduler):
    """Celery's in-memory scheduler, with the packs' schedules fired in ``tick``."""

    max_interval = MAX_WAIT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._fire_at = 0.0  # time.monotonic() of the next look at the schedules
        self._failing = False
        self._stopping = False
        super().__init__(*args, **kwargs)
        self._stop_on_signals()

    def _stop_on_signals(self) -> None:
        """SIGTERM and SIGINT stop the beat at its next tick (within MAX_WAIT_S).

        Celery's own handler raises SystemExit wherever the signal lands. Landing in a
        weakref callback of the garbage collector, the exception is printed and dropped,
        and the beat runs on: one SIGTERM in a few was lost so. This one only takes note;
        ``tick`` raises SystemExit from the beat's loop, which syncs and exits."""
        if threading.current_thread() is not threading.main_thread():
            return

        def stop(signum: int, frame: Any) -> None:
            self._stopping = True

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, stop)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if self._stopping:
            raise SystemExit()
        if time.monotonic() >= self._fire_at:
            self._fire_at = self.fire()
        celery_wait = super().tick(*args, **kwargs)
        return max(min(celery_wait, self._fire_at - time.monotonic()), 0.0)

    def fire(self) -> float:
        """Fire every due schedule, a batch per transaction, and make the due delayed runs
        join their lines; returns when (on the monotonic clock) to look again."""
        settings: Settings = self.app.conf.usher_settings
        engine = db.engine_for(db.database_url(settings))
        try:
            while True:
                with db.unit_of_work(engine) as session:
                    fired = schedules.fire_due(session, settings)
                usher_celery.after_intake(self.app, fired)
                if fired.skipped:
                    log.info("schedules: %d missed tick(s) skipped", fired.skipped)
                log.debug("schedules: fired %d tick(s)", len(fired.fires))
                if fired.taken < schedules.BATCH:
                    break
            joined = delayed_runs.join_due(self.app, engine, settings)
            if joined:
                log.debug("delayed runs: %d joined their lines", joined)
            with db.unit_of_work(engine) as session:
                following = [schedules.next_due_s(session), delayed.next_due_s(session)]
            waits = [w for w in following if w is not None]
            again = time.monotonic() + wait_s(min(waits) if waits else None)
        except Exception:
            # The database is away (or a bug): try again in a second, and say so once.
            log.log(
                logging.DEBUG if self._failing else logging.ERROR,
                "firing schedules or delayed runs failed; trying again every %gs",
                MAX_WAIT_S,
                exc_info=not self._failing,
            )
            self._failing = True
            return time.monotonic() + MAX_WAIT_S
        if self._failing:
            log.info("firing schedules and delayed runs works again")
            self._failing = False
        return again
