"""Real ``usher beat`` processes firing schedules: two beats and a 1 s schedule fire each tick
exactly once (one event, one enforcement, one execution) within 2 s of its time, and go on
without losing or doubling a tick when one of them is SIGKILLed; after a downtime, missed
ticks are skipped or the latest one runs once. Times are the database's."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from app import config, db
from app.cli import processes
from policies import schedules
from tests.integration.test_schedules import load as load_pack
from tests.integration.test_schedules import write_pack
from tests.support import invariants
from tests.support.flow import submit, wait_final, wait_until
from tests.support.workers import Pool

pytestmark = pytest.mark.processes

# Not marked broker: a tick's once-only is Postgres's primary key, so the Redis pass of CI
# leaves these out.
S = timedelta(seconds=1)


def start_beat(pool: Pool, name: str, **env: str) -> subprocess.Popen[bytes]:
    """``usher beat`` with its own log (stopped by the pool's teardown), once it ticks."""
    pool.log_dir.mkdir(parents=True, exist_ok=True)
    log = pool.log_dir / f"{name}.log"
    beat = processes.launch(["beat"], processes.environment(pool.settings) | env, log)
    pool.others.append(beat)
    wait_until(
        lambda: "beat: Starting..." in log.read_text(errors="replace") or beat.poll() is not None,
        30,
        what=f"{name} to start",
    )
    assert beat.poll() is None, log.read_text(errors="replace")[-3000:]
    return beat


def stop_beat(beat: subprocess.Popen[bytes], kill: bool = False) -> None:
    os.killpg(beat.pid, signal.SIGKILL if kill else signal.SIGTERM)
    beat.wait(timeout=20)


def db_now(engine: Engine) -> datetime:
    with engine.connect() as conn:
        return conn.execute(text("SELECT clock_timestamp()")).scalar_one()


def fires(engine: Engine, ref: str) -> list[Any]:
    """Each tick of ``ref``: when it fired, its events (by payload), enforcements, executions."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("""
                SELECT f.fire_at, f.fired_at,
                       (SELECT count(*) FROM events e WHERE e.payload ->> 'schedule' = s.ref
                          AND CAST(e.payload ->> 'fire_at' AS timestamptz) = f.fire_at) AS events,
                       (SELECT count(*) FROM enforcements n WHERE n.event_id = f.event_id
                          AND n.rule_ref = s.ref) AS enforcements,
                       (SELECT array_agg(x.started_at) FROM enforcements n
                          JOIN executions x ON x.id = n.execution_id
                          WHERE n.event_id = f.event_id AND n.rule_ref = s.ref) AS started
                FROM schedule_fires f JOIN schedules s ON s.id = f.schedule_id
                WHERE s.ref = :ref ORDER BY f.fire_at"""),
                {"ref": ref},
            ).all()
        )


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def _sleep_to_half_second() -> None:
    """Until the middle of a second: between two ticks, when a beat is asleep (killed in a
    transaction, it would be rolled back and its tick fired by the other; killed between
    its commit and its publish, its grant would wait for the sweeper's republish)."""
    time.sleep((1.5 - time.time() % 1) % 1)


@pytest.mark.parametrize(
    "run_s",
    [
        pytest.param(20, marks=pytest.mark.timeout(120), id="20s"),
        pytest.param(60, marks=[pytest.mark.slow, pytest.mark.timeout(180)], id="60s"),
    ],
)
def test_two_beats_fire_each_tick_once_on_time_and_one_may_die(
    engine: Engine,
    settings: config.Settings,
    celery_app: Any,
    worker_pool: Pool,
    tmp_path: Path,
    run_s: int,
) -> None:
    # Given a worker that consumes the action's queue, and two beats
    worker_pool.start(concurrency=2)
    action = {"runner": "noop", "policy": {"concurrency": 1}}
    load_pack(engine, write_pack(tmp_path, {}, {"a": action}, name="h"))
    submit(engine, settings, celery_app, "h.a", [{}])
    wait_final(engine, ["h.a"], timeout=30)
    beats = [start_beat(worker_pool, f"beat{n}") for n in (1, 2)]
    # When a schedule every second runs, and one beat is SIGKILLed halfway
    plan = {"tick": {"every_s": 1, "action": "h.a", "parameters": {"at": "{{ schedule.fire_at }}"}}}
    load_pack(engine, write_pack(tmp_path, plan, {"a": action}, name="h"))
    time.sleep(run_s / 2)
    _sleep_to_half_second()
    stop_beat(beats[0], kill=True)
    killed_at = db_now(engine)
    time.sleep(run_s / 2)
    with db.unit_of_work(engine) as session:
        schedules.set_paused(session, "h.tick", True)
    wait_final(engine, ["h.a"], timeout=30)
    # Then every tick between the first and the last fired exactly once
    found = fires(engine, "h.tick")
    ticks = [f.fire_at for f in found]
    assert len(ticks) >= run_s - 3
    assert ticks == [ticks[0] + k * S for k in range(len(ticks))], "a tick lost or doubled"
    assert any(t > killed_at + 2 * S for t in ticks), "nothing fired after the kill"
    # With one event, one enforcement and one execution each
    assert [(f.events, f.enforcements, len(f.started or [])) for f in found] == [(1, 1, 1)] * len(
        found
    )
    # Each fired and started within 2 s of its time
    fired_s = [(f.fired_at - f.fire_at).total_seconds() for f in found]
    started_s = [(f.started[0] - f.fire_at).total_seconds() for f in found]
    print(
        f"\n{len(found)} ticks in {run_s} s, two beats (one SIGKILLed): fire delay p99 "
        f"{p99(fired_s) * 1000:.0f} ms (max {max(fired_s) * 1000:.0f}), start delay p99 "
        f"{p99(started_s) * 1000:.0f} ms (max {max(started_s) * 1000:.0f})"
    )
    assert max(started_s) <= 2.0
    # And the line's limit and FIFO held
    invariants.check_line(engine, "h.a", limit=1)


def test_after_a_downtime_missed_ticks_are_skipped_or_the_latest_runs_once(
    engine: Engine, settings: config.Settings, worker_pool: Pool, tmp_path: Path
) -> None:
    # Given a beat whose grace for late ticks is 1 s, and two schedules every second
    grace = {"USHER_SCHEDULE_GRACE_S": "1"}
    beat = start_beat(worker_pool, "beat-a", **grace)
    plan = {
        "skip": {"every_s": 1, "action": "d.a", "missed": "skip"},
        "once": {"every_s": 1, "action": "d.a", "missed": "run_once"},
    }
    load_pack(engine, write_pack(tmp_path, plan, name="d"))
    wait_until(lambda: all(len(fires(engine, f"d.{s}")) >= 3 for s in plan), 15, what="ticks")
    # When the beat is away for over 5 ticks past the grace, then back
    stop_beat(beat)
    stopped_at = db_now(engine)
    time.sleep(6.5)
    start_beat(worker_pool, "beat-b", **grace)
    wait_until(
        lambda: all(
            sum(f.fired_at > stopped_at for f in fires(engine, f"d.{s}")) >= 3 for s in plan
        ),
        20,
        what="ticks after the downtime",
    )
    # Then of the ticks missed (due while no beat ran, later than the grace when one came
    # back), none fired for skip and exactly one, the latest, for run_once
    for name, expected in (("skip", 0), ("once", 1)):
        found = fires(engine, f"d.{name}")
        before = max(f.fire_at for f in found if f.fired_at < stopped_at)
        back = min(
            f.fire_at
            for f in found
            if f.fired_at > stopped_at and (f.fired_at - f.fire_at).total_seconds() <= 1
        )
        missed = [before + k * S for k in range(1, round((back - before) / S))]
        fired_missed = [f.fire_at for f in found if before < f.fire_at < back]
        assert len(missed) >= 5, (name, missed)
        assert fired_missed == missed[-1:] * expected, (name, fired_missed, missed)
        # Every tick fired made its execution, and none fired twice
        assert [(f.enforcements, len(f.started or [])) for f in found] == [(1, 1)] * len(found)
        assert len({f.fire_at for f in found}) == len(found)
