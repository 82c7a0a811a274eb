"""The core's promises with real worker processes, a real broker and a real Postgres.

Runs against USHER_TEST_BROKER_URL (RabbitMQ or Redis), or the embedded filesystem:// broker
when none is named.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from app import celery as usher_celery
from app import config, db
from policies import admission
from tasks import sweeper
from tests.support import invariants, packs
from tests.support.flow import status, statuses, submit, wait_final, wait_until
from tests.support.schemas import declaring
from tests.support.workers import REPO, Pool, environment

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

SLEEP_SCHEMA = {"type": "object", "properties": {"seconds": {"type": "number"}}}
MARKER_SCHEMA = declaring("seconds", "marker")


def marker_sleeper(name: str, **policy: object) -> dict[str, object]:
    """A python action that sleeps ``seconds`` and then writes ``marker`` (limit one)."""
    return {
        "name": name,
        "runner": "python",
        "runner_config": {"entry_point": "tests.integration.actions:sleep_then_mark"},
        "parameters": MARKER_SCHEMA,
        "policy": {"concurrency": 1, **policy},
    }


def sleeper(name: str, concurrency: int, **policy: object) -> dict[str, object]:
    return {
        "name": name,
        "runner": "sleep",
        "parameters": SLEEP_SCHEMA,
        "policy": {"concurrency": concurrency, **policy},
    }


def test_a_thousand_executions_with_limit_five(
    engine: Engine,
    settings: config.Settings,
    celery_app: object,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    # Given one action with limit 5 and three worker processes with 8 slots between them
    ref = packs.load(engine, tmp_path, [sleeper("job", 5)]) + ".job"
    for concurrency in (3, 3, 2):
        worker_pool.start(concurrency=concurrency)
    # When 1,000 executions are requested
    ids = submit(engine, settings, celery_app, ref, [{"seconds": 0.005}] * 1000)
    wait_final(engine, [ref], timeout=240)
    # Then all succeed, never more than 5 at once, granted strictly in seq order
    assert statuses(engine, ref) == {"succeeded": 1000}
    invariants.check_line(engine, ref, limit=5)
    with engine.connect() as conn:
        granted = (
            conn.execute(text("SELECT id FROM executions ORDER BY scheduled_at, seq"))
            .scalars()
            .all()
        )
        workers = conn.execute(
            text("SELECT count(DISTINCT split_part(worker, '/', 1)) FROM executions")
        ).scalar_one()
    assert granted == ids
    assert workers == 3


def test_limit_one_runs_never_overlap_and_follow_seq(
    engine: Engine,
    settings: config.Settings,
    celery_app: object,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    ref = packs.load(engine, tmp_path, [sleeper("serial", 1)]) + ".serial"
    worker_pool.start(concurrency=2)
    worker_pool.start(concurrency=2)
    submit(engine, settings, celery_app, ref, [{"seconds": 0.01}] * 100)
    wait_final(engine, [ref], timeout=180)
    invariants.check_line(engine, ref, limit=1)
    with engine.connect() as conn:
        runs = conn.execute(
            text("SELECT seq, started_at, finished_at FROM executions ORDER BY started_at")
        ).all()
    assert [r.seq for r in runs] == list(range(1, 101))
    for before, after in itertools.pairwise(runs):
        assert before.finished_at <= after.started_at


def test_independent_lines_and_a_slow_action_does_not_delay_a_fast_one(
    engine: Engine,
    settings: config.Settings,
    celery_app: object,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    name = packs.load(
        engine, tmp_path, [sleeper("slow", 1), sleeper("medium", 2), sleeper("fast", 4)]
    )
    worker_pool.start(concurrency=4)
    worker_pool.start(concurrency=4)
    slow, medium, fast = (f"{name}.{a}" for a in ("slow", "medium", "fast"))
    submit(engine, settings, celery_app, slow, [{"seconds": 0.3}] * 50)
    submit(engine, settings, celery_app, medium, [{"seconds": 0.02}] * 50)
    submit(engine, settings, celery_app, fast, [{"seconds": 0.0}] * 50)
    wait_final(engine, [fast, medium], timeout=120)
    # The slow line (50 x 0.3 s, one at a time) is far from done when the others finish.
    assert statuses(engine, slow).get("succeeded", 0) < 45
    wait_final(engine, [slow], timeout=120)
    for ref, limit in ((slow, 1), (medium, 2), (fast, 4)):
        invariants.check_line(engine, ref, limit)
        assert statuses(engine, ref) == {"succeeded": 50}


def test_pinned_pools_and_a_pool_for_everything(
    engine: Engine,
    settings: config.Settings,
    celery_app: object,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    name = packs.load(engine, tmp_path, [sleeper("a", 2), sleeper("b", 4)])
    a, b = f"{name}.a", f"{name}.b"
    worker_pool.start(concurrency=1, actions=a, name="pool-a")
    worker_pool.start(concurrency=3, actions=f"{name}.b*", name="pool-b")
    worker_pool.start(concurrency=2, name="pool-all")
    submit(engine, settings, celery_app, a, [{"seconds": 0.1}] * 30)
    submit(engine, settings, celery_app, b, [{"seconds": 0.01}] * 60)
    wait_final(engine, [a, b], timeout=180)
    with engine.connect() as conn:
        pools = {
            ref: set(
                conn.execute(
                    text(
                        "SELECT DISTINCT split_part(split_part(e.worker, '/', 1), '@', 1) "
                        "FROM executions e JOIN actions x ON x.id = e.action_id WHERE x.ref = :r"
                    ),
                    {"r": ref},
                ).scalars()
            )
            for ref in (a, b)
        }
    assert pools[a] <= {"pool-a", "pool-all"}
    assert pools[b] <= {"pool-b", "pool-all"}
    assert "pool-a" in pools[a] and "pool-b" in pools[b]
    invariants.check_line(engine, a, 2)
    invariants.check_line(engine, b, 4)


def test_partitions_have_their_own_limit_and_progress_in_parallel(
    engine: Engine,
    settings: config.Settings,
    celery_app: object,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    action = sleeper("restart", 1, partition_by=["host"])
    action["parameters"] = {
        "type": "object",
        "properties": {"host": {"type": "string"}, "seconds": {"type": "number"}},
    }
    ref = packs.load(engine, tmp_path, [action]) + ".restart"
    worker_pool.start(concurrency=4)
    hosts = ["db1", "db2", "web1"]
    submit(
        engine,
        settings,
        celery_app,
        ref,
        [{"host": hosts[i % 3], "seconds": 0.1} for i in range(30)],
    )
    wait_final(engine, [ref], timeout=120)
    invariants.check_line(engine, ref, limit=1)  # per partition
    ids = invariants.queue_ids(engine, ref)
    assert len(ids) == 3
    assert invariants.max_active(engine, ids) >= 2  # lines overlapped in time


def test_actions_registered_after_the_worker_started_are_picked_up(
    engine: Engine,
    settings: config.Settings,
    celery_app: object,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    worker_pool.start(concurrency=1)
    ref = packs.load(engine, tmp_path, [sleeper("late", 1)]) + ".late"
    (execution_id,) = submit(engine, settings, celery_app, ref, [{"seconds": 0}])
    wait_until(lambda: status(engine, execution_id) == "succeeded", 30, what="the late action")


def test_cancel_a_running_execution_terminates_it_and_starts_the_next(
    engine: Engine,
    settings: config.Settings,
    celery_app: object,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    ref = (
        packs.load(
            engine,
            tmp_path,
            [
                {
                    "name": "long",
                    "runner": "python",
                    "runner_config": {"entry_point": "tests.integration.actions:sleep_then_mark"},
                    "parameters": MARKER_SCHEMA,
                    "policy": {"concurrency": 1},
                }
            ],
        )
        + ".long"
    )
    worker_pool.start(concurrency=2)
    marker = tmp_path / "first.done"
    first, second = submit(
        engine,
        settings,
        celery_app,
        ref,
        [
            {"seconds": 4, "marker": str(marker)},
            {"seconds": 0, "marker": str(tmp_path / "second.done")},
        ],
    )
    wait_until(lambda: status(engine, first) == "running", 30, what="first running")
    with db.unit_of_work(engine) as session:
        cancelled = admission.cancel(session, settings, first)
    usher_celery.terminate(celery_app, first, 1, cancelled.previous_status)  # type: ignore[arg-type]
    usher_celery.publish(celery_app, cancelled.grants)  # type: ignore[arg-type]
    wait_until(lambda: status(engine, second) == "succeeded", 30, what="second to run")
    time.sleep(5)  # past the moment the first would have finished on its own
    assert not marker.exists(), "the cancelled execution was not terminated"
    assert status(engine, first) == "cancelled"
    invariants.check_line(engine, ref, limit=1)


def test_a_killed_pool_process_frees_its_slot_at_once(
    engine: Engine,
    settings: config.Settings,
    celery_app: object,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    ref = packs.load(engine, tmp_path, [sleeper("victim", 1, retry={"max_retries": 0})])
    ref += ".victim"
    worker = worker_pool.start(concurrency=2)
    first, second = submit(engine, settings, celery_app, ref, [{"seconds": 60}, {"seconds": 0}])
    wait_until(lambda: status(engine, first) == "running", 30, what="first running")
    with engine.connect() as conn:
        pid = int(
            conn.execute(
                text("SELECT split_part(worker, '/', 2) FROM executions WHERE id = :i"),
                {"i": first},
            ).scalar_one()
        )
    assert pid in worker.child_pids()
    os.kill(pid, signal.SIGKILL)
    # The worker's main process reports WorkerLostError: no waiting for the lease.
    wait_until(lambda: status(engine, second) == "succeeded", 20, what="the next in line")
    assert status(engine, first) == "dead"  # no retries allowed: the dead-letter queue
    with engine.connect() as conn:
        error, outcome = conn.execute(
            text(
                "SELECT e.error, t.outcome FROM executions e JOIN attempts t "
                "ON t.execution_id = e.id WHERE e.id = :i"
            ),
            {"i": first},
        ).one()
    assert error.startswith("worker_lost") and outcome == "worker_lost"
    invariants.check_line(engine, ref, limit=1)


def test_the_sweeper_republishes_a_grant_whose_message_was_lost(
    engine: Engine,
    settings: config.Settings,
    celery_app: object,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    ref = packs.load(engine, tmp_path, [sleeper("lost", 1)]) + ".lost"
    # Granted in Postgres, but the message never reached the broker (app=None: no publish).
    (execution_id,) = submit(engine, settings, None, ref, [{"seconds": 0}])
    assert status(engine, execution_id) == "scheduled"
    worker_pool.start(concurrency=1)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE execution_state SET published_at = published_at - interval '10 minutes'")
        )
    counts = sweeper.sweep()
    assert counts["republished"] == 1
    wait_until(lambda: status(engine, execution_id) == "succeeded", 30, what="republished run")
    invariants.check_line(engine, ref, limit=1)


def test_the_sweeper_releases_an_expired_lease(
    engine: Engine, settings: config.Settings, celery_app: object, tmp_path: Path
) -> None:
    # A backoff longer than the sweep: the lost attempt cannot be due again within it.
    ghost = sleeper("ghost", 1, retry={"initial_delay_ms": 10_000, "jitter": False})
    ref = packs.load(engine, tmp_path, [ghost]) + ".ghost"
    first, second = submit(engine, settings, None, ref, [{}, {}])
    with db.unit_of_work(engine) as session:
        assert admission.claim(session, first, 1, "gone@host/1", 6)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE execution_state SET lease_expires_at = now() - interval '1 s' WHERE id = :i"
            ),
            {"i": first},
        )
    assert sweeper.sweep()["lost_workers"] == 1
    # The lost attempt is retried later; its slot went to the next in line at once.
    assert status(engine, first) == "retrying"
    assert status(engine, second) == "scheduled"
    assert invariants.counter_mismatches(engine) == []


def test_a_raised_limit_is_granted_by_the_next_sweep(
    engine: Engine, settings: config.Settings, celery_app: object, tmp_path: Path
) -> None:
    # Given a line with limit 1 and three waiting behind the one that holds the slot
    name = packs.load(engine, tmp_path, [sleeper("grow", 1)])
    ids = submit(engine, settings, None, f"{name}.grow", [{}] * 4)
    # When the pack is reloaded with limit 3 and the sweeper runs
    packs.load(engine, tmp_path, [sleeper("grow", 3)], name=name)
    assert sweeper.sweep()["granted"] == 2
    # Then the two oldest waiting get the new slots, the last still waits
    assert [status(engine, i) for i in ids] == ["scheduled"] * 3 + ["queued"]
    assert invariants.counter_mismatches(engine) == []


def test_a_time_limit_ends_as_timed_out_and_frees_the_slot(
    engine: Engine,
    settings: config.Settings,
    celery_app: object,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    action = sleeper("slowpoke", 1, retry={"max_retries": 0})
    action["timeout_s"] = 1
    ref = packs.load(engine, tmp_path, [action]) + ".slowpoke"
    worker_pool.start(concurrency=1)
    first, second = submit(engine, settings, celery_app, ref, [{"seconds": 30}, {"seconds": 0}])
    wait_until(lambda: status(engine, second) == "succeeded", 30, what="the next in line")
    assert status(engine, first) == "dead"
    with engine.connect() as conn:
        outcome = conn.execute(
            text("SELECT outcome FROM attempts WHERE execution_id = :i"), {"i": first}
        ).scalar_one()
    assert outcome == "timed_out"
    invariants.check_line(engine, ref, limit=1)


def test_beat_runs_the_sweeper_that_frees_a_dead_workers_slot(
    engine: Engine,
    settings: config.Settings,
    celery_app: object,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    # Given an execution claimed by a worker that vanished without a signal
    ref = packs.load(engine, tmp_path, [sleeper("orphan", 1)]) + ".orphan"
    first, second = submit(engine, settings, celery_app, ref, [{"seconds": 0}] * 2)
    with db.unit_of_work(engine) as session:
        assert admission.claim(session, first, 1, "vanished@host/1", settings.lease_s)
    # When a worker and beat run
    worker_pool.start(concurrency=1)
    beat = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "beat"],
        env=environment(settings),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # Then within the lease and a few sweeps the slot is back and the next one ran
        wait_until(
            lambda: status(engine, second) == "succeeded",
            settings.lease_s + 30,
            what="the sweeper to release the lost lease",
        )
        # The lost attempt is retried (attempt 2) after the next in line took the slot.
        wait_until(lambda: status(engine, first) == "succeeded", 30, what="the retry")
    finally:
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(timeout=15)
    with engine.connect() as conn:
        outcomes = (
            conn.execute(
                text("SELECT outcome FROM attempts WHERE execution_id = :i ORDER BY attempt"),
                {"i": first},
            )
            .scalars()
            .all()
        )
    assert outcomes == ["worker_lost", "succeeded"]
    invariants.check_line(engine, ref, limit=1)


def test_a_paused_worker_that_comes_back_cannot_overwrite_the_newer_attempt(
    engine: Engine,
    settings: config.Settings,
    celery_app: object,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    # Given an execution running on a pool process that is then frozen past its lease
    retry = {"max_retries": 2, "initial_delay_ms": 10}
    ref = packs.load(engine, tmp_path, [marker_sleeper("zombie", retry=retry)]) + ".zombie"
    frozen_worker = worker_pool.start(concurrency=1)
    marker = tmp_path / "zombie.done"
    (execution_id,) = submit(
        engine, settings, celery_app, ref, [{"seconds": 3, "marker": str(marker)}]
    )
    wait_until(lambda: status(engine, execution_id) == "running", 30, what="running")
    (child,) = frozen_worker.child_pids()
    os.kill(child, signal.SIGSTOP)
    try:
        # When its lease runs out, the sweeper gives the slot away and a second worker
        # runs attempt 2 to the end
        worker_pool.start(concurrency=1)
        wait_until(
            lambda: (
                sweeper.sweep()["lost_workers"] == 1 or status(engine, execution_id) != "running"
            ),
            settings.lease_s + 15,
            interval=0.5,
            what="the lease to expire",
        )
        wait_until(lambda: status(engine, execution_id) == "succeeded", 30, what="attempt 2")
    finally:
        os.kill(child, signal.SIGCONT)
    # Then the zombie finishes attempt 1 late, and its report changes nothing
    time.sleep(5)
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT status, attempt FROM executions WHERE id = :i"), {"i": execution_id}
        ).one()
        outcomes = (
            conn.execute(
                text("SELECT outcome FROM attempts WHERE execution_id = :i ORDER BY attempt"),
                {"i": execution_id},
            )
            .scalars()
            .all()
        )
    assert (row.status, row.attempt) == ("succeeded", 2)
    assert outcomes == ["worker_lost", "succeeded"]
    invariants.check_line(engine, ref, limit=1)


def test_a_runner_whose_attempt_was_given_away_is_stopped(
    engine: Engine,
    settings: config.Settings,
    celery_app: object,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    stray_action = marker_sleeper("stray", retry={"max_retries": 0})
    ref = packs.load(engine, tmp_path, [stray_action]) + ".stray"
    worker_pool.start(concurrency=1)  # one pool process: a stuck runner would block it
    marker = tmp_path / "stray.done"
    (stray,) = submit(engine, settings, celery_app, ref, [{"seconds": 60, "marker": str(marker)}])
    wait_until(lambda: status(engine, stray) == "running", 30, what="running")
    # Given its attempt is given away while it runs (as the sweeper does past a lease)
    with db.unit_of_work(engine) as session:
        released = admission.release(
            session,
            settings,
            admission.Ended(stray, 1, "worker_lost", error="worker_lost: given away"),
        )
    assert released.status == "dead"
    # When the worker's next heartbeat finds the attempt no longer its own, it stops the
    # runner: the only pool process is free long before the 60 s sleep would end
    (after,) = submit(engine, settings, celery_app, ref, [{"seconds": 0, "marker": str(marker)}])
    wait_until(
        lambda: status(engine, after) == "succeeded",
        settings.heartbeat_s + 20,
        what="the next execution, on the process the stray runner held",
    )
    # Then the stray attempt's report changed nothing
    assert status(engine, stray) == "dead"
    invariants.check_line(engine, ref, limit=1)


@pytest.mark.processes  # its own worker pool, not the fixture
def test_sigterm_lets_short_work_finish_and_releases_the_rest_after_the_grace(
    engine: Engine, settings: config.Settings, celery_app: object, tmp_path: Path
) -> None:
    graceful = settings.model_copy(update={"shutdown_grace_s": 3.0})
    pool = Pool(graceful, tmp_path / "graceful-logs")
    ref = packs.load(engine, tmp_path, [sleeper("drain", 2, retry={"max_retries": 0})])
    ref += ".drain"
    try:
        worker = pool.start(concurrency=2)
        short, long_ = submit(engine, settings, celery_app, ref, [{"seconds": 1}, {"seconds": 60}])
        wait_until(
            lambda: status(engine, long_) == "running" == status(engine, short),
            30,
            what="both running",
        )
        stopped_at = time.monotonic()
        worker.process.send_signal(signal.SIGTERM)
        worker.process.wait(timeout=30)
        took = time.monotonic() - stopped_at
    finally:
        pool.stop_all()
    # The short one finished inside the grace; the long one was released after it
    assert status(engine, short) == "succeeded"
    assert status(engine, long_) == "dead"  # no retries allowed here: the DLQ
    with engine.connect() as conn:
        error = conn.execute(
            text("SELECT error FROM executions WHERE id = :i"), {"i": long_}
        ).scalar_one()
    assert "shut down after 3s grace" in error
    assert 3 <= took < 25, took
    invariants.check_line(engine, ref, limit=2)
