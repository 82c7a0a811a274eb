"""``usher bench``: Usher against plain Celery, same broker, same worker processes, one run.

Method: fill an Usher line (limit L) and a plain Celery queue with N no-op executions each
before any worker runs, then let the same worker processes drain Usher first and plain Celery
second. Throughput is N over first start to last finish; grant latency is, for every
execution granted by a completion, the time from that completion to the execution's start
on a worker (release + grant in Postgres, publish, broker delivery, claim).
"""

from __future__ import annotations

import bisect
import statistics
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from app import celery as usher_celery
from app import config, db, packs, processes

PLAIN_QUEUE = "usher.bench.plain"


@dataclass
class Figures:
    system: str
    executions: int
    seconds: float
    per_second: float
    enqueue_per_second: float
    grant_latency_p50_ms: float | None = None
    grant_latency_p99_ms: float | None = None


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _scratch_database(url: str) -> tuple[str, str]:
    """Create an empty database beside the configured one; returns (its URL, its name)."""
    name = f"usher_bench_{uuid.uuid4().hex[:8]}"
    admin = make_url(url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(url).set(database=name).render_as_string(hide_password=False), name


def _drop_database(url: str, name: str) -> None:
    admin = make_url(url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _percentile(values: list[float], q: float) -> float | None:
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def grant_latencies_ms(engine: Engine, ref: str, limit: int) -> list[float]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("""
                SELECT e.seq, e.scheduled_at, e.started_at, e.finished_at
                FROM executions e JOIN actions a ON a.id = e.action_id WHERE a.ref = :ref
            """),
            {"ref": ref},
        ).all()
    finishes = sorted(r.finished_at for r in rows if r.finished_at is not None)
    latencies = []
    for r in rows:
        if r.seq <= limit or r.started_at is None:
            continue  # granted at enqueue time, not by a completion
        i = bisect.bisect_right(finishes, r.scheduled_at)
        if i:
            latencies.append((r.started_at - finishes[i - 1]).total_seconds() * 1000)
    return latencies


def run(
    settings: config.Settings,
    executions: int = 10_000,
    workers: int = 2,
    concurrency: int = 4,
    limit: int = 8,
    console: Console | None = None,
) -> list[Figures]:
    console = console or Console(stderr=True)
    assert settings.database_url, "resolve the database URL before benchmarking"
    url, name = _scratch_database(settings.database_url)
    scratch = Path(tempfile.mkdtemp(prefix="usher-bench-"))
    bench_settings = settings.model_copy(
        update={"database_url": url, "home": settings.home if settings.broker_url else scratch}
    )
    pool = processes.Pool(bench_settings, scratch / "logs")
    celery_app = usher_celery.create(bench_settings)
    engine = db.make_engine(url)
    try:
        db.upgrade(url)
        ref = _load_pack(engine, scratch, limit)
        with _progress(console) as progress:
            usher_fill = _fill_usher(engine, bench_settings, celery_app, ref, executions, progress)
            plain_path = scratch / "plain.log"
            plain_fill = _fill_plain(celery_app, executions, plain_path, progress)
            for i in range(workers):
                pool.start(concurrency=concurrency, actions=ref, name=f"bench{i + 1}")
            usher = _drain_usher(engine, ref, executions, limit, usher_fill, progress)
            celery_app.control.add_consumer(PLAIN_QUEUE, reply=True, timeout=5)
            plain = _drain_plain(plain_path, executions, plain_fill, progress)
        return [usher, plain]
    finally:
        pool.stop_all()
        engine.dispose()
        celery_app.close()
        _drop_database(settings.database_url, name)


def _load_pack(engine: Engine, scratch: Path, limit: int) -> str:
    pack = f"bench{uuid.uuid4().hex[:6]}"
    root = scratch / "packs" / pack
    (root / "actions").mkdir(parents=True)
    (root / "pack.yaml").write_text(f"name: {pack}\n")
    (root / "actions" / "noop.yaml").write_text(
        f"name: noop\nrunner: noop\npolicy: {{concurrency: {limit}}}\n"
    )
    with db.unit_of_work(engine) as session:
        packs.load(session, root)
    return f"{pack}.noop"


def _fill_usher(
    engine: Engine, settings: config.Settings, app: Any, ref: str, n: int, progress: Progress
) -> float:
    from policies import admission

    task = progress.add_task("usher: enqueue", total=n)
    start = time.perf_counter()
    for _ in range(n):
        with db.unit_of_work(engine) as session:
            enqueued = admission.enqueue(session, settings, ref, {})
        usher_celery.publish(app, enqueued.grants)
        progress.advance(task)
    progress.remove_task(task)
    return n / (time.perf_counter() - start)


def _fill_plain(app: Any, n: int, path: Path, progress: Progress) -> float:
    task = progress.add_task("celery: publish", total=n)
    start = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for i in range(n):
            app.send_task(
                "usher.bench.plain", args=[i, str(path)], queue=PLAIN_QUEUE, producer=producer
            )
            progress.advance(task)
    progress.remove_task(task)
    return n / (time.perf_counter() - start)


def _drain_usher(
    engine: Engine, ref: str, n: int, limit: int, fill_rate: float, progress: Progress
) -> Figures:
    task = progress.add_task("usher: run", total=n)
    query = text("""
        SELECT count(*) FILTER (WHERE e.status = 'succeeded') AS done,
               min(e.started_at) AS first, max(e.finished_at) AS last
        FROM executions e JOIN actions a ON a.id = e.action_id WHERE a.ref = :ref
    """)
    while True:
        with engine.connect() as conn:
            row = conn.execute(query, {"ref": ref}).one()
        progress.update(task, completed=row.done)
        if row.done >= n:
            break
        time.sleep(0.5)
    progress.remove_task(task)
    seconds = (row.last - row.first).total_seconds()
    latencies = grant_latencies_ms(engine, ref, limit)
    return Figures(
        "usher",
        n,
        round(seconds, 2),
        round(n / seconds, 1),
        round(fill_rate, 1),
        _round(_percentile(latencies, 50)),
        _round(_percentile(latencies, 99)),
    )


def _drain_plain(path: Path, n: int, fill_rate: float, progress: Progress) -> Figures:
    task = progress.add_task("celery: run", total=n)
    lines: list[str] = []
    while len(lines) < n:
        time.sleep(0.5)
        lines = path.read_text().splitlines() if path.exists() else []
        progress.update(task, completed=len(lines))
    progress.remove_task(task)
    stamps = [float(line.split()[1]) for line in lines]
    seconds = max(stamps) - min(stamps)
    return Figures("plain celery", n, round(seconds, 2), round(n / seconds, 1), round(fill_rate, 1))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def show(figures: list[Figures], broker: str, console: Console) -> None:
    table = Table(title=f"usher bench on {broker}", header_style="bold")
    for column in (
        "system",
        "executions",
        "seconds",
        "exec/s",
        "enqueue/s",
        "grant p50 ms",
        "grant p99 ms",
    ):
        table.add_column(column, justify="left" if column == "system" else "right")
    for f in figures:
        table.add_row(
            f.system,
            str(f.executions),
            f"{f.seconds:.2f}",
            f"{f.per_second:.1f}",
            f"{f.enqueue_per_second:.1f}",
            "-" if f.grant_latency_p50_ms is None else f"{f.grant_latency_p50_ms:.2f}",
            "-" if f.grant_latency_p99_ms is None else f"{f.grant_latency_p99_ms:.2f}",
        )
    console.print(table)


def as_dicts(figures: list[Figures]) -> list[dict[str, Any]]:
    return [asdict(f) for f in figures]
