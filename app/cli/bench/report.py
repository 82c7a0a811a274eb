"""``usher bench``'s figures: what one system did (``Figures``), the whole run (``Report``),
and how they are printed (``show``) or given as JSON (``as_dict``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

# Executions of the hand-off run (a line that never waits for a worker process).
HANDOFF_RUN = 1000


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


def as_dict(report: Report) -> dict[str, Any]:
    data = asdict(report)
    data.pop("timeline")
    data.pop("handoffs_ms")
    data.pop("idle_handoffs")
    return data
