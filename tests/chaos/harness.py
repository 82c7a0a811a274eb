"""The chaos harness: mixed lines under load while worker processes are SIGKILLed.

Checks, from Postgres: every execution reached a final state, no attempt ran twice past
its fence, never more than the limit at once at any level (each line, a partitioned
action's total, a pool shared by two actions), FIFO grants, counters (lines' and levels')
equal a recount, and nothing left running, scheduled or holding a slot of any level once
the lease and a sweep have passed.
By hand: ``python -m tests.chaos --executions 5000 --kill-every 2``.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from app import celery as usher_celery
from app import config, db
from app.cli.processes import Pool, Worker
from policies import admission
from tests.support import invariants, packs

LIMITS = {"one": 1, "two": 2, "three": 3, "eight": 8, "hosts": 1, "pa": 2, "pb": 2}
# Levels above the line: "hosts" is partitioned by host with a total of 2 across its lines;
# "pa" and "pb" share the pool "shared" of 2. (level, its actions, its limit)
LEVELS = [("total", ("hosts",), 2), ("shared", ("pa", "pb"), 2)]
POOLS = {"shared": 2}
LEVEL_POLICIES: dict[str, dict[str, Any]] = {
    "hosts": {"partition_by": ["host"], "total_concurrency": 2},
    "pa": {"pools": ["shared"]},
    "pb": {"pools": ["shared"]},
}
HOSTS = ("h1", "h2", "h3")


@dataclass
class Report:
    executions: int = 0
    kills: int = 0
    whole_worker_kills: int = 0
    lost: int = 0
    over_limit_lines: int = 0
    fifo_violations: int = 0
    double_runs: int = 0
    counter_mismatches: int = 0
    left_active: int = 0
    dead: int = 0
    worker_lost_attempts: int = 0
    slowest_recovery_s: float = 0.0
    seconds: float = 0.0
    peaks: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.over_limit_lines
            or self.fifo_violations
            or self.double_runs
            or self.counter_mismatches
            or self.left_active
        )


def actions(
    limits: dict[str, int], policies: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Sleep actions of these limits (and policies), retried often and fast: a kill costs an
    attempt, never the execution."""
    policies = LEVEL_POLICIES if policies is None else policies
    return [
        {
            "name": name,
            "runner": "sleep",
            "timeout_s": 30,
            "parameters": {"type": "object", "properties": {"seconds": {"type": "number"}}},
            "policy": {
                **policies.get(name, {}),
                "concurrency": limit,
                "retry": {
                    "max_retries": 20,
                    "strategy": "fixed",
                    "initial_delay_ms": 50,
                    "jitter": False,
                },
            },
        }
        for name, limit in limits.items()
    ]


class Killer(threading.Thread):
    """Every ``every_s``: SIGKILL a random pool process, or (1 in ``whole_every``) a whole
    worker, which is then replaced so capacity stays."""

    def __init__(self, pool: Pool, every_s: float, rng: random.Random, whole_every: int = 4):
        super().__init__(daemon=True, name="chaos-killer")
        self.pool, self.every_s, self.rng, self.whole_every = pool, every_s, rng, whole_every
        self.stop = threading.Event()
        self.kills: list[float] = []
        self.whole = 0

    def run(self) -> None:
        while not self.stop.wait(self.every_s):
            workers = list(self.pool.workers)
            if not workers:
                continue
            worker: Worker = self.rng.choice(workers)
            if len(self.kills) % self.whole_every == self.whole_every - 1:
                self.kills.append(time.time())
                self.pool.kill(worker)
                self.whole += 1
                self.pool.start(concurrency=3)
                continue
            children = worker.child_pids()
            if children:
                import os
                import signal

                self.kills.append(time.time())
                try:
                    os.kill(self.rng.choice(children), signal.SIGKILL)
                except ProcessLookupError:
                    pass


def run(
    engine: Engine,
    settings: config.Settings,
    celery_app: Any,
    workdir: Path,
    executions: int = 500,
    kill_every_s: float = 1.0,
    workers: int = 3,
    seed: int = 1,
    timeout_s: float = 600,
) -> Report:
    rng = random.Random(seed)
    name = packs.load(engine, workdir, actions(LIMITS), pools=POOLS)
    refs = [f"{name}.{action}" for action in LIMITS]
    pool = Pool(settings, workdir / "logs")
    report = Report(executions=executions)
    started = time.monotonic()
    try:
        for _ in range(workers):
            pool.start(concurrency=3)
        pool.start_beat()
        killer = Killer(pool, kill_every_s, rng)
        killer.start()
        for _ in range(executions):
            ref = rng.choice(refs)
            parameters: dict[str, Any] = {"seconds": round(rng.uniform(0.02, 0.4), 3)}
            if ref.endswith(".hosts"):
                parameters["host"] = rng.choice(HOSTS)
            with db.unit_of_work(engine) as session:
                enqueued = admission.enqueue(session, settings, ref, parameters)
            usher_celery.publish(celery_app, enqueued.grants)
            time.sleep(rng.uniform(0, 0.004))
        deadline = time.monotonic() + timeout_s
        while sum(invariants.unfinished(engine, ref) for ref in refs) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.5)
        killer.stop.set()
        killer.join(timeout=30)
        # Everything must be settled: a lease and a sweep after the load stopped
        time.sleep(settings.lease_s + 2 * settings.sweep_interval_s)
        _fill(report, engine, refs, killer.kills)
        report.kills, report.whole_worker_kills = len(killer.kills), killer.whole
    finally:
        pool.stop_all()
    report.seconds = round(time.monotonic() - started, 1)
    return report


def _fill(report: Report, engine: Engine, refs: list[str], kills: list[float]) -> None:
    report.lost = sum(invariants.unfinished(engine, ref) for ref in refs)
    for ref in refs:
        ids = invariants.queue_ids(engine, ref)
        # Each line against its own limit (a partitioned action has one line per host)
        peak = max(invariants.max_active(engine, [queue_id]) for queue_id in ids)
        report.peaks[ref] = peak
        report.over_limit_lines += peak > LIMITS[ref.split(".")[1]]
        report.fifo_violations += invariants.fifo_violations(engine, ids)
    prefix = refs[0].split(".")[0]
    for level, names, limit in LEVELS:
        ids = [q for n in names for q in invariants.queue_ids(engine, f"{prefix}.{n}")]
        peak = invariants.max_active(engine, ids)
        report.peaks[f"level {level}"] = peak
        report.over_limit_lines += peak > limit
    report.counter_mismatches = len(invariants.counter_mismatches(engine))
    with engine.connect() as conn:
        report.double_runs = conn.execute(
            text("""
            SELECT count(*) FROM (SELECT execution_id FROM attempts WHERE outcome = 'succeeded'
                                  GROUP BY execution_id HAVING count(*) > 1) x""")
        ).scalar_one()
        report.left_active = conn.execute(
            text("""
            SELECT (SELECT count(*) FROM executions
                    WHERE status IN ('scheduled', 'running', 'queued')
                       OR (status = 'retrying' AND holds_slot))
                 + (SELECT coalesce(sum(active_count + queue_length), 0) FROM queues)
                 + (SELECT coalesce(sum(active), 0) FROM levels)""")
        ).scalar_one()
        report.dead = conn.execute(
            text("SELECT count(*) FROM executions WHERE status = 'dead'")
        ).scalar_one()
        lost_at = [
            r[0].timestamp()
            for r in conn.execute(
                text("SELECT finished_at FROM attempts WHERE outcome = 'worker_lost'")
            ).all()
        ]
    report.worker_lost_attempts = len(lost_at)
    # Slot recovery: from a kill to the release of an attempt it took down
    recoveries = []
    for released in lost_at:
        before = [k for k in kills if k <= released]
        if before:
            recoveries.append(released - max(before))
    report.slowest_recovery_s = round(max(recoveries, default=0.0), 2)
