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
"""

from __future__ import annotations

import bisect
import logging
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from app import celery as usher_celery
from app import config, db
from app.cli import processes
from app.cli.bench import invariants
from app.errors import UsherError
from policies import intake, packs

log = logging.getLogger(__name__)

PLAIN_QUEUE = "usher.bench.plain"
PLAIN_MODULE = "app.cli.bench.plain"
# Executions of the hand-off run (a line that never waits for a worker process).
HANDOFF_RUN = 1000
BATCH = 500


@dataclass
class Figures:
    system: str
    executions: int
    seconds: float
    per_second: float
    intake_per_second: float
    handoff_p50_ms: float | None = None
    handoff_p99_ms: float | None = None
    handoff_postgres_p50_ms: float | None = None
    wait_p50_ms: float | None = None
    wait_p99_ms: float | None = None


@dataclass
class Report:
    broker: str
    actions: int
    limit: int
    workers: int
    concurrency: int
    plain_queues: int
    runs: list[Figures]
    ratio: float
    invariants: dict[str, int]
    rss_mb: dict[str, float]
    # CPU milliseconds per execution, by part of the system (CpuMeter), per system.
    cpu_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    # app.cli.bench.intake's figures (batch intake, cost by queue depth), when asked for.
    intake: dict[str, float] = field(default_factory=dict)
    # Completions per second over time, per system: for the plot.
    timeline: dict[str, list[float]] = field(default_factory=dict)
    handoffs_ms: list[float] = field(default_factory=list)
    # Hand-off on a line with fewer slots than worker processes (nothing waits for a process).
    idle_handoff_ms: dict[str, float | None] = field(default_factory=dict)
    idle_handoffs: list[float] = field(default_factory=list)
    plot: str | None = None


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def scratch_database(url: str) -> tuple[str, str]:
    """Create an empty database beside the configured one; returns (its URL, its name)."""
    name = f"usher_bench_{uuid.uuid4().hex[:8]}"
    admin = make_url(url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(url).set(database=name).render_as_string(hide_password=False), name


def drop_database(url: str, name: str) -> None:
    admin = make_url(url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch(settings: config.Settings) -> Iterator[tuple[str, Path]]:
    """A migrated scratch database and folder, dropped and left behind afterwards."""
    assert settings.database_url, "resolve the database URL before benchmarking"
    url, name = scratch_database(settings.database_url)
    folder = Path(tempfile.mkdtemp(prefix="usher-bench-"))
    try:
        db.upgrade(url)
        yield url, folder
    finally:
        db.dispose_all()
        drop_database(settings.database_url, name)


def _percentile(values: list[float], q: float) -> float | None:
    if len(values) < 2:
        return values[0] if values else None
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1], 2)


def handoffs(engine: Engine, refs: list[str]) -> tuple[list[float], list[float]]:
    """(completion -> next start, completion -> next grant) in ms, for every execution that a
    completion of its own line granted (the grant is in the release's transaction, so the
    releasing completion is the line's last ``finished_at`` at or before ``scheduled_at``)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("""
                SELECT e.queue_id, e.enqueued_at, e.scheduled_at, e.started_at, e.finished_at
                FROM executions e JOIN actions a ON a.id = e.action_id WHERE a.ref = ANY(:refs)
            """),
            {"refs": refs},
        ).all()
    finishes: dict[int, list[Any]] = {}
    for r in rows:
        if r.finished_at is not None:
            finishes.setdefault(r.queue_id, []).append(r.finished_at)
    for stamps in finishes.values():
        stamps.sort()
    to_start, to_grant = [], []
    for r in rows:
        if r.started_at is None or r.scheduled_at is None:
            continue
        line = finishes.get(r.queue_id, [])
        i = bisect.bisect_right(line, r.scheduled_at)
        if not i or line[i - 1] < r.enqueued_at:
            continue  # granted at its request, not by a completion
        to_start.append((r.started_at - line[i - 1]).total_seconds() * 1000)
        to_grant.append((r.scheduled_at - line[i - 1]).total_seconds() * 1000)
    return to_start, to_grant


def _per_second(stamps: list[float], start: float, step: float = 0.5) -> list[float]:
    if not stamps:
        return []
    buckets = [0] * (int((max(stamps) - start) / step) + 1)
    for stamp in stamps:
        buckets[max(int((stamp - start) / step), 0)] += 1
    return [count / step for count in buckets]


class RssSampler:
    """Peak resident memory of the workers' main and pool processes, read from /proc."""

    def __init__(self, pool: processes.Pool) -> None:
        self.pool = pool
        self.peak: dict[str, float] = {"worker main": 0.0, "pool process": 0.0}
        self.start: dict[str, float] = {}

    def sample(self) -> None:
        for worker in self.pool.workers:
            self._note("worker main", worker.process.pid)
            for child in worker.child_pids():
                self._note("pool process", child)
        if not self.start:
            # Idle workers, before any backlog: what the peak is compared with.
            self.start = {f"{role} at start": value for role, value in self.peak.items()}

    def _note(self, role: str, pid: int) -> None:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                self.peak[role] = max(self.peak[role], int(line.split()[1]) / 1024)


# Server processes by command name, and the part of the system they are.
SERVERS = {"postgres": "postgres", "beam.smp": "broker", "redis-server": "broker"}


class CpuMeter:
    """CPU seconds used by each part of the system (from /proc), to split a run's cost.

    Postgres and the broker are counted whole (every process of their user), so nothing
    else may use them during the run for the split to be exact.
    """

    def __init__(self, pool: processes.Pool) -> None:
        self.pool = pool
        self.tick = os.sysconf("SC_CLK_TCK")

    def read(self) -> dict[int, tuple[str, float]]:
        """{pid: (part, CPU seconds so far)} for every process of a part."""
        found: dict[int, tuple[str, float]] = {}
        workers = {w.process.pid: "worker main" for w in self.pool.workers}
        for worker in self.pool.workers:
            workers.update(dict.fromkeys(worker.child_pids(), "pool processes"))
        workers[os.getpid()] = "benchmark client"
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            part = workers.get(int(entry.name)) or SERVERS.get(comm)
            if part:
                # utime and stime, the 14th and 15th fields of /proc/<pid>/stat
                found[int(entry.name)] = (part, (int(fields[11]) + int(fields[12])) / self.tick)
        return found

    @staticmethod
    def per_execution_ms(
        before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], n: int
    ) -> dict[str, float]:
        """Each part's CPU between two readings (a process that exited in between is lost)."""
        used: dict[str, float] = {}
        for pid, (part, seconds) in after.items():
            used[part] = used.get(part, 0.0) + seconds - before.get(pid, (part, 0.0))[1]
        return {part: round(used[part] * 1000 / n, 3) for part in sorted(used)}


def run(
    settings: config.Settings,
    executions: int = 10_000,
    actions: int = 10,
    limit: int = 5,
    workers: int = 2,
    concurrency: int = 2,
    console: Console | None = None,
    plain_queues: int = 1,
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
            pack = load_pack(engine, folder, actions, limit, handoff_limit)
            refs = [f"{pack}.noop{i}" for i in range(actions)]
            with _progress(console) as progress:
                task = progress.add_task("starting workers", total=workers)
                for i in range(workers):
                    pool.start(
                        concurrency=concurrency,
                        actions=f"{pack}.*",
                        name=f"bench{i + 1}",
                        # Only the benchmark's workers know the plain task.
                        extra=("--include", PLAIN_MODULE),
                    )
                    progress.advance(task)
                progress.remove_task(task)
                for name in _plain_queues(plain_queues):
                    celery_app.control.add_consumer(name, reply=True, timeout=5)
                rss.sample()
                cpu = CpuMeter(pool)
                marks = [cpu.read()]
                usher = _run_usher(
                    engine, bench_settings, celery_app, refs, executions, progress, rss
                )
                marks.append(cpu.read())
                plain = _run_plain(
                    celery_app,
                    folder / "plain.log",
                    executions,
                    progress,
                    rss,
                    _plain_queues(plain_queues),
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
                invariants=check(
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
            queues = [usher_celery.queue_name(ref) for ref in refs]
            delete_queues(celery_app, [*queues, *_plain_queues(plain_queues)])
            engine.dispose()
            celery_app.close()


def load_pack(
    engine: Engine, folder: Path, actions: int, limit: int, handoff_limit: int = 0
) -> str:
    """Actions ``noop0``.. of concurrency ``limit``; with ``handoff_limit``, also ``handoff``."""
    pack = f"bench{uuid.uuid4().hex[:6]}"
    root = folder / "packs" / pack
    (root / "actions").mkdir(parents=True)
    (root / "pack.yaml").write_text(f"name: {pack}\n")
    limits = {f"noop{i}": limit for i in range(actions)}
    if handoff_limit:
        limits["handoff"] = handoff_limit
    for name, concurrency in limits.items():
        (root / "actions" / f"{name}.yaml").write_text(
            f"name: {name}\nrunner: noop\npolicy: {{concurrency: {concurrency}}}\n"
        )
    with db.unit_of_work(engine) as session:
        packs.load(session, root)
    return pack


def _submit(
    engine: Engine, settings: config.Settings, app: Any, requests: list[dict[str, Any]]
) -> None:

    with db.unit_of_work(engine) as session:
        taken = intake.enqueue_many(session, settings, requests)
    assert taken.refused == 0, [item.error for item in taken if item.error][:3]
    usher_celery.publish(app, taken.grants)


def _wait(done: Callable[[], int], n: int, label: str, progress: Progress, rss: RssSampler) -> None:
    task = progress.add_task(label, total=n)
    while (count := done()) < n:
        progress.update(task, completed=count)
        rss.sample()
        time.sleep(0.25)
    progress.remove_task(task)


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
    count = text("""
        SELECT count(*) FROM executions e JOIN actions a ON a.id = e.action_id
        WHERE a.ref = ANY(:refs) AND e.status = 'succeeded'
    """)

    def done() -> int:
        with engine.connect() as conn:
            return int(conn.execute(count, {"refs": refs}).scalar_one())

    _wait(done, n, "usher: run", progress, rss)
    with engine.connect() as conn:
        row = conn.execute(
            text("""
                SELECT extract(epoch FROM max(e.finished_at)) AS last,
                       array_agg(extract(epoch FROM e.finished_at)) AS stamps,
                       array_agg(extract(epoch FROM e.started_at - e.enqueued_at) * 1000) AS waits
                FROM executions e JOIN actions a ON a.id = e.action_id WHERE a.ref = ANY(:refs)
            """),
            {"refs": refs},
        ).one()
    seconds = float(row.last) - start
    to_start, to_grant = handoffs(engine, refs)
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
    return figures, _per_second([float(s) for s in row.stamps], start), to_start


def _plain_queues(count: int) -> list[str]:
    """Plain Celery's queues: one, or one per action (routed the way Usher routes)."""
    return [PLAIN_QUEUE] if count == 1 else [f"{PLAIN_QUEUE}.{i}" for i in range(count)]


def _run_plain(
    app: Any, path: Path, n: int, progress: Progress, rss: RssSampler, queues: list[str]
) -> tuple[Figures, list[float]]:
    task = progress.add_task("celery: requests", total=n)
    start = time.time()
    with app.producer_or_acquire() as producer:
        for i in range(n):
            app.send_task(
                "usher.bench.plain",
                args=[i, str(path)],
                queue=queues[i % len(queues)],
                producer=producer,
            )
            if i % BATCH == 0:
                progress.advance(task, BATCH)
    intake_s = time.time() - start
    progress.remove_task(task)

    def done() -> int:
        return len(path.read_text().splitlines()) if path.exists() else 0

    _wait(done, n, "celery: run", progress, rss)
    stamps = [float(line.split()[1]) for line in path.read_text().splitlines()]
    seconds = max(stamps) - start
    figures = Figures(
        "plain celery", n, round(seconds, 2), round(n / seconds, 1), round(n / intake_s, 1)
    )
    return figures, _per_second(stamps, start)


def check(engine: Engine, limits: dict[str, int], executions: int) -> dict[str, int]:
    """The invariants, as counts that must all be 0 (``peak_over_limit`` the excess)."""
    over = violations = 0
    for ref, limit in limits.items():
        for queue_id in invariants.queue_ids(engine, ref):
            over = max(over, invariants.max_active(engine, [queue_id]) - limit)
            violations += invariants.fifo_violations(engine, [queue_id])
    with engine.connect() as conn:
        succeeded = conn.execute(
            text("""SELECT count(*) FROM executions e JOIN actions a ON a.id = e.action_id
                    WHERE a.ref = ANY(:refs) AND e.status = 'succeeded'"""),
            {"refs": list(limits)},
        ).scalar_one()
    return {
        "lost": executions - int(succeeded),
        "peak_over_limit": over,
        "fifo_violations": violations,
        "counter_mismatches": len(invariants.counter_mismatches(engine)),
    }


def show(report: Report, console: Console) -> None:
    table = Table(
        title=(
            f"usher bench on {report.broker}: {report.runs[0].executions:,} no-op executions over "
            f"{report.actions} actions (limit {report.limit} each), "
            f"{report.workers} workers x {report.concurrency}"
            + (f"; plain Celery on {report.plain_queues} queues" if report.plain_queues > 1 else "")
        ),
        header_style="bold",
    )
    columns = (
        "system",
        "exec/s",
        "seconds",
        "requests/s",
        "hand-off p50 ms",
        "p99 ms",
        "of it in Postgres p50",
        "queue wait p50 ms",
        "p99 ms",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "system" else "right")

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:,.2f}"

    for f in report.runs:
        table.add_row(
            f.system,
            f"{f.per_second:,.1f}",
            f"{f.seconds:.2f}",
            f"{f.intake_per_second:,.1f}",
            cell(f.handoff_p50_ms),
            cell(f.handoff_p99_ms),
            cell(f.handoff_postgres_p50_ms),
            cell(f.wait_p50_ms),
            cell(f.wait_p99_ms),
        )
    console.print(table)
    console.print(f"usher / plain celery: [bold]{report.ratio:.2f}x[/bold]")
    idle = report.idle_handoff_ms
    if idle:
        console.print(
            f"hand-off with a free worker process (line limit {idle['limit']}, "
            f"{HANDOFF_RUN:,} executions): p50 {idle['p50']} ms, p99 {idle['p99']} ms"
        )
    held = ", ".join(f"{k} {v}" for k, v in report.invariants.items())
    verdict = "[green]hold[/green]" if not any(report.invariants.values()) else "[red]BROKEN[/red]"
    console.print(f"invariants {verdict}: {held}")
    if report.cpu_ms:
        cpu = Table(title="CPU ms per execution", header_style="bold")
        parts = sorted({p for split in report.cpu_ms.values() for p in split})
        cpu.add_column("system")
        for part in [*parts, "total"]:
            cpu.add_column(part, justify="right")
        for system, split in report.cpu_ms.items():
            values = [split.get(p, 0.0) for p in parts]
            cpu.add_row(system, *(f"{v:.2f}" for v in [*values, sum(values)]))
        console.print(cpu)
    console.print(
        "RSS (peak during the runs): "
        + ", ".join(f"{k} {v:.1f} MiB" for k, v in report.rss_mb.items())
    )
    if report.intake:
        from app.cli.bench import intake as bench_intake

        bench_intake.show(report.intake, console)
    if report.plot:
        console.print(f"plot: {report.plot}")


def plot(report: Report, path: Path) -> Path:
    """Completions per second over time for both systems, and the hand-off distribution."""
    try:
        import matplotlib
    except ImportError:
        raise UsherError("the plot needs matplotlib: pip install -e '.[bench]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rate, latency) = plt.subplots(1, 2, figsize=(12, 4.5))
    for system, series in report.timeline.items():
        rate.plot([i * 0.5 for i in range(len(series))], series, label=system)
    rate.set_xlabel("seconds since the first request")
    rate.set_ylabel("completions / s")
    rate.set_title("throughput")
    rate.legend()
    for label, series, color in (
        ("under the load (grants wait for a process)", report.handoffs_ms, "tab:blue"),
        ("a free process waiting", report.idle_handoffs, "tab:green"),
    ):
        values = sorted(series)
        if values:
            fractions = [(i + 1) / len(values) for i in range(len(values))]
            latency.plot(values, fractions, label=label, color=color)
    latency.set_xscale("log")
    latency.legend(loc="lower right")
    latency.set_xlabel("hand-off ms (slot freed -> next of the line running)")
    latency.set_ylabel("fraction of hand-offs")
    latency.set_title("Usher hand-off latency (CDF)")
    latency.grid(True, which="both", alpha=0.3)
    figure.suptitle(
        f"{report.runs[0].executions:,} executions, {report.actions} actions x limit "
        f"{report.limit}, {report.broker}: Usher {report.ratio:.2f}x plain Celery"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    report.plot = str(path)
    return path


def as_dict(report: Report) -> dict[str, Any]:
    data = asdict(report)
    data.pop("timeline")
    data.pop("handoffs_ms")
    data.pop("idle_handoffs")
    return data


def delete_queues(app: Any, names: Iterable[str]) -> None:
    """Delete broker queues (a benchmark's scratch actions), so none is left behind."""
    try:
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            for name in names:
                channel.queue_delete(name)
    except Exception:
        log.exception("could not delete the queues; delete them with the broker's tools")
