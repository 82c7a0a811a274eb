"""``usher bench``: Usher against plain Celery, same broker, same worker processes, one run.

Method (docs/performance.md): a scratch database with A no-op actions of concurrency L each;
W worker processes that consume both Usher's action queues and a plain Celery queue, started
and ready before the clock starts. Each system then gets N executions, spread over the
actions, from the first request to the last completion:

- Usher: requests go in through ``policies.intake.enqueue_many`` (the batch API's path) in
  batches, while the workers already run what is granted;
- plain Celery: N ``send_task`` of a task that appends one line to a file.

Figures: executions/s and the ratio; **hand-off** (a completion freed a slot of a line ->
the next execution of that line started on a worker: release + grant in one statement,
publish, broker, claim) and its part spent in Postgres; **queue wait** (request -> start);
the worker processes' peak RSS; the invariants of DESIGN.md, checked on the timestamps
Postgres recorded. ``usher bench --intake`` adds ``app.cli.bench.intake``'s figures: batch
intake and the cost of enqueue and grant with a line 100 and 100,000 deep.

This module runs the two systems; what a run is measured with is in ``measures``, plain
Celery's side in ``baseline``, the figures and their table in ``report``, the plot in
``plot``, the scratch database, pack and queues in ``scratch``.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from rich.console import Console
from rich.progress import Progress
from sqlalchemy import Engine

from app import celery as usher_celery
from app import config, db
from app.cli import processes
from app.cli.bench import baseline, invariants, measures, statements
from app.cli.bench.measures import CpuMeter, RssSampler
from app.cli.bench.report import HANDOFF_RUN, Figures, Report
from app.cli.bench.scratch import delete_queues, load_pack, scratch

# Where they were before the benchmark's modules were split (tests.chaos imports them).
from app.cli.bench.scratch import drop_database as drop_database
from app.cli.bench.scratch import scratch_database as scratch_database
from policies import intake

BATCH = 500


def run(
    settings: config.Settings,
    executions: int = 10_000,
    actions: int = 10,
    limit: int = 5,
    workers: int = 2,
    concurrency: int = 2,
    console: Console | None = None,
    plain_queues: int = 1,
    listen: bool = False,
) -> Report:
    """Both systems on the scratch database, one after the other on the same workers."""
    console = console or Console(stderr=True)
    with scratch(settings) as (url, folder):
        bench_settings = settings.model_copy(
            update={"database_url": url, "home": settings.home if settings.broker_url else folder}
        )
        pool = processes.Pool(bench_settings, folder / "logs")
        celery_app = usher_celery.create(bench_settings)
        engine = db.make_engine(url)
        rss = RssSampler(pool)
        refs: list[str] = []
        try:
            # A line with fewer slots than worker processes: every grant finds an idle one.
            handoff_limit = max(workers * concurrency // 2, 1)
            pack = load_pack(engine, folder, actions, limit, handoff_limit, listen)
            refs = [f"{pack}.noop{i}" for i in range(actions)]
            with measures.progress(console) as progress:
                task = progress.add_task("starting workers", total=workers)
                for i in range(workers):
                    pool.start(
                        concurrency=concurrency,
                        actions=f"{pack}.*",
                        name=f"bench{i + 1}",
                        # Only the benchmark's workers know the plain task.
                        extra=("--include", baseline.PLAIN_MODULE),
                    )
                    progress.advance(task)
                progress.remove_task(task)
                # Only to the benchmark's own workers: another worker on a shared broker
                # would take plain tasks it does not know and drop them.
                own = [f"bench{i + 1}@{socket.gethostname()}" for i in range(workers)]
                for name in baseline.plain_queues(plain_queues):
                    celery_app.control.add_consumer(name, destination=own, reply=True, timeout=5)
                rss.sample()
                cpu = CpuMeter(pool)
                marks = [cpu.read()]
                usher = _run_usher(
                    engine, bench_settings, celery_app, refs, executions, progress, rss
                )
                marks.append(cpu.read())
                plain = baseline.run_plain(
                    celery_app,
                    folder / "plain.log",
                    executions,
                    progress,
                    rss,
                    baseline.plain_queues(plain_queues),
                    BATCH,
                )
                marks.append(cpu.read())
                idle = _run_usher(
                    engine,
                    bench_settings,
                    celery_app,
                    [f"{pack}.handoff"],
                    min(executions, HANDOFF_RUN),
                    progress,
                    rss,
                )
            report = Report(
                broker=(settings.broker_url or "filesystem://").split("@")[-1],
                actions=actions,
                limit=limit,
                workers=workers,
                concurrency=concurrency,
                plain_queues=plain_queues,
                runs=[usher[0], plain[0]],
                ratio=round(usher[0].per_second / plain[0].per_second, 3),
                invariants=invariants.check(
                    engine,
                    {**dict.fromkeys(refs, limit), f"{pack}.handoff": handoff_limit},
                    executions + idle[0].executions,
                ),
                idle_handoff_ms={
                    "limit": handoff_limit,
                    "p50": idle[0].handoff_p50_ms,
                    "p99": idle[0].handoff_p99_ms,
                },
                rss_mb={k: round(v, 1) for k, v in {**rss.start, **rss.peak}.items()},
                cpu_ms={
                    "usher": CpuMeter.per_execution_ms(marks[0], marks[1], executions),
                    "plain celery": CpuMeter.per_execution_ms(marks[1], marks[2], executions),
                },
                timeline={"usher": usher[1], "plain celery": plain[1]},
                handoffs_ms=usher[2],
                idle_handoffs=idle[2],
            )
            return report
        finally:
            pool.stop_all()
            queues = [usher_celery.queue_name(celery_app, ref) for ref in refs]
            delete_queues(celery_app, [*queues, *baseline.plain_queues(plain_queues)])
            engine.dispose()
            celery_app.close()


def _submit(
    engine: Engine, settings: config.Settings, app: Any, requests: list[dict[str, Any]]
) -> None:

    with db.unit_of_work(engine) as session:
        taken = intake.enqueue_many(session, settings, requests)
    assert taken.refused == 0, [item.error for item in taken if item.error][:3]
    usher_celery.publish(app, taken.grants)


def _run_usher(
    engine: Engine,
    settings: config.Settings,
    app: Any,
    refs: list[str],
    n: int,
    progress: Progress,
    rss: RssSampler,
) -> tuple[Figures, list[float], list[float]]:
    task = progress.add_task("usher: requests", total=n)
    start = time.time()
    for offset in range(0, n, BATCH):
        size = min(BATCH, n - offset)
        requests = [{"action": refs[(offset + i) % len(refs)]} for i in range(size)]
        _submit(engine, settings, app, requests)
        progress.advance(task, size)
    intake_s = time.time() - start
    progress.remove_task(task)
    count = statements.query("run_progress")

    def done() -> int:
        with engine.connect() as conn:
            return int(conn.execute(count, {"refs": refs}).scalar_one())

    measures.wait(done, n, "usher: run", progress, rss)
    with engine.connect() as conn:
        row = conn.execute(statements.query("run_figures"), {"refs": refs}).one()
    seconds = float(row.last) - start
    to_start, to_grant = measures.handoffs(engine, refs)
    waits = [float(w) for w in row.waits]
    figures = Figures(
        "usher",
        n,
        round(seconds, 2),
        round(n / seconds, 1),
        round(n / intake_s, 1),
        _percentile(to_start, 50),
        _percentile(to_start, 99),
        _percentile(to_grant, 50),
        _percentile(waits, 50),
        _percentile(waits, 99),
    )
    return figures, measures.per_second([float(s) for s in row.stamps], start), to_start


def _percentile(values: list[float], q: int) -> float | None:
    """In ms to two decimals; a lone value as it was measured."""
    found = measures.percentile(values, q)
    return round(found, 2) if found is not None and len(values) > 1 else found
