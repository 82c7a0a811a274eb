"""``usher bench --retention MINUTES``: months of history compressed into minutes. A steady
load for MINUTES with ``USHER_RETENTION_S=60``, real workers and a real beat (whose sweeper
prunes), printing each minute the history tables' rows, sizes and dead tuples, and the
cost of intake and of a grant: retention must keep the tables flat after the first
minutes (vacuum keeping up with the deletes) and the costs where they were at minute 2.

The load: each second, RATE executions requested over four no-op lines (the batch path, as
the API's batch) and RATE / 5 events that a rule turns into executions of a fifth line.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from app import celery as usher_celery
from app import config, db
from app.cli import processes
from app.cli.bench import statements
from app.cli.bench.measures import percentile
from app.cli.bench.scratch import delete_queues, scratch
from policies import events, intake, packs, retention

TABLES = [
    "execution_requests",
    "execution_state",
    "attempts",
    "events",
    "enforcements",
    "audit",
    "schedule_fires",
]
RETENTION_S = 60
TRIGGER = "soak.tick"


@dataclass
class Minute:
    minute: int
    tables: dict[str, dict[str, int]]
    enqueued_per_s: float
    completed_per_s: float
    enqueue_ms_p50: float | None
    wait_ms_p50: float
    wait_ms_p99: float
    oldest_finished_s: float  # how long ago the oldest kept execution finished


@dataclass
class Load:
    """The load's thread: what it asked for, and how long each batch took to commit."""

    engine: Engine
    settings: config.Settings
    app: Any
    refs: list[str]
    rate: int
    stop: threading.Event = field(default_factory=threading.Event)
    enqueue_ms: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        tick = time.monotonic()
        n = 0
        while not self.stop.is_set():
            requests = [{"action": self.refs[(n + i) % len(self.refs)]} for i in range(self.rate)]
            n += self.rate
            started = time.perf_counter()
            with db.unit_of_work(self.engine) as session:
                taken = intake.enqueue_many(session, self.settings, requests)
            usher_celery.publish(self.app, taken.grants)
            with self.lock:
                self.enqueue_ms.append((time.perf_counter() - started) * 1000)
            with db.unit_of_work(self.engine) as session:
                stored = events.store_many(
                    session, [{"trigger": TRIGGER, "payload": {"n": n}}] * max(self.rate // 5, 1)
                )
            usher_celery.send_events(self.app, stored)
            tick += 1.0
            self.stop.wait(max(tick - time.monotonic(), 0))

    def take_ms(self) -> list[float]:
        with self.lock:
            taken, self.enqueue_ms = self.enqueue_ms, []
        return taken


def _pack(engine: Engine, folder: Any) -> str:
    root = folder / "packs" / "soak"
    (root / "actions").mkdir(parents=True)
    (root / "rules").mkdir()
    (root / "pack.yaml").write_text("name: soak\npolicy: {concurrency: 5}\n")
    for i in range(5):
        (root / "actions" / f"noop{i}.yaml").write_text(f"name: noop{i}\nrunner: noop\n")
    (root / "rules" / "on_tick.yaml").write_text(
        f"name: on_tick\ntrigger: {TRIGGER}\naction: soak.noop4\n"
    )
    with db.unit_of_work(engine) as session:
        packs.load(session, root)
    return "soak"


def _look(engine: Engine) -> tuple[dict[str, dict[str, int]], int, int, float, float, float]:
    with engine.connect() as conn:
        tables = {
            r.name: {"rows": r.rows, "bytes": r.bytes, "dead": r.dead, "vacuums": r.vacuums}
            for r in conn.execute(statements.query("soak_tables"), {"tables": TABLES})
        }
        totals = conn.execute(statements.query("soak_totals")).one()
        waits = conn.execute(statements.query("soak_waits"), {"window": 60}).one()
        oldest = conn.execute(statements.query("soak_oldest")).scalar_one()
    return tables, int(totals.enqueued), int(totals.completed), waits.p50, waits.p99, oldest


def run(
    settings: config.Settings,
    minutes: int,
    rate: int = 50,
    console: Console | None = None,
    minute_s: float = 60.0,
) -> list[Minute]:
    """The soak; one Minute per ``minute_s`` (a shorter one only for the bounded test)."""
    console = console or Console(stderr=True)
    with scratch(settings) as (url, folder):
        soak_settings = settings.model_copy(
            update={
                "database_url": url,
                "home": settings.home if settings.broker_url else folder,
                "retention_s": RETENTION_S,
                "sweep_interval_s": 2.0,
            }
        )
        engine = db.make_engine(url)
        app = usher_celery.create(soak_settings)
        pool = processes.Pool(soak_settings, folder / "logs")
        refs = [f"soak.noop{i}" for i in range(4)]
        load = Load(engine, soak_settings, app, refs, rate)
        thread = threading.Thread(target=load.run, name="soak-load", daemon=True)
        try:
            _pack(engine, folder)
            for i in range(2):
                pool.start(concurrency=2, actions="soak.*", name=f"soak{i + 1}")
            pool.start_beat()
            _, enqueued, completed, _, _, _ = _look(engine)
            if not retention.autovacuum_on(engine):
                console.print(
                    "[yellow]autovacuum is off on this Postgres: the deleted rows stay as dead "
                    "tuples, so sizes will grow (ALTER SYSTEM SET autovacuum = on)[/yellow]"
                )
            thread.start()
            found: list[Minute] = []
            for minute in range(1, minutes + 1):
                time.sleep(minute_s)
                tables, now_enqueued, now_completed, p50, p99, oldest = _look(engine)
                taken = load.take_ms()
                found.append(
                    Minute(
                        minute,
                        tables,
                        round((now_enqueued - enqueued) / minute_s, 1),
                        round((now_completed - completed) / minute_s, 1),
                        round(p, 2) if (p := percentile(taken, 50)) is not None else None,
                        round(p50, 1),
                        round(p99, 1),
                        round(float(oldest), 1),
                    )
                )
                enqueued, completed = now_enqueued, now_completed
                console.print(line(found[-1]), highlight=False)
            return found
        finally:
            load.stop.set()
            if thread.is_alive():
                thread.join(timeout=30)
            pool.stop_all()
            refs = [f"soak.noop{i}" for i in range(5)]
            delete_queues(app, [usher_celery.queue_name(app, ref) for ref in refs])
            engine.dispose()
            app.close()


def line(m: Minute) -> str:
    rows = ", ".join(f"{name} {t['rows']:,}" for name, t in m.tables.items())
    size = sum(t["bytes"] for t in m.tables.values()) / 1024 / 1024
    dead = sum(t["dead"] for t in m.tables.values())
    return (
        f"minute {m.minute:>3}: {m.enqueued_per_s:,.0f} enqueued/s, {m.completed_per_s:,.0f} "
        f"completed/s, enqueue p50 {m.enqueue_ms_p50} ms/batch, wait p50 {m.wait_ms_p50} ms, "
        f"oldest kept finished {m.oldest_finished_s:.0f} s ago; "
        f"rows: {rows}; {size:,.1f} MiB, {dead:,} dead tuples"
    )


def table(found: list[Minute]) -> Table:
    out = Table(title=f"history kept for {RETENTION_S} s", header_style="bold")
    for column in ("minute", "enqueued/s", "completed/s", "enqueue p50 ms", "wait p50 ms"):
        out.add_column(column, justify="right")
    for name in TABLES:
        out.add_column(f"{name} rows", justify="right")
    out.add_column("MiB", justify="right")
    out.add_column("dead", justify="right")
    for m in found:
        out.add_row(
            str(m.minute),
            f"{m.enqueued_per_s:,.0f}",
            f"{m.completed_per_s:,.0f}",
            str(m.enqueue_ms_p50),
            str(m.wait_ms_p50),
            *[f"{m.tables[name]['rows']:,}" for name in TABLES if name in m.tables],
            f"{sum(t['bytes'] for t in m.tables.values()) / 1024 / 1024:,.1f}",
            f"{sum(t['dead'] for t in m.tables.values()):,}",
        )
    return out
