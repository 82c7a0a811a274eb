"""``usher bench-web``'s figures: which endpoints scan executions or attempts sequentially,
the widest read, and the tables ``usher bench-web`` prints (``--plans`` for the plans)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from app.cli.bench import plans


def seq_scans(report: dict[str, Any]) -> dict[str, list[str]]:
    """Endpoint -> the tables its queries read with a sequential scan (executions, attempts)."""
    found: dict[str, list[str]] = {}
    for name, figures in report.items():
        tables = sorted({t for q in figures["queries"] for t in q["seq_scans"]})
        if tables:
            found[name] = tables
    return found


def widest_reads(report: dict[str, Any], only: Any = None) -> dict[str, int]:
    """The most rows any one query of any endpoint (of those ``only`` keeps, by name) read
    from executions and from attempts."""
    widest = {"executions": 0, "attempts": 0}
    for name, figures in report.items():
        if only is not None and not only(name):
            continue
        for query in figures["queries"]:
            for table, n in query["rows_read"].items():
                # An execution is read from its request and its state: the wider of the two.
                kind = "executions" if table.startswith("execution_") else table
                widest[kind] = max(widest[kind], n)
    return widest


def show(report: dict[str, Any], console: Console, title: str = "usher bench-web") -> None:
    table = Table(title=title, header_style="bold")
    columns = ("endpoint", "status", "p50 ms", "p95 ms", "max ms", "SQL", "SQL ms", "worst plan")
    for column in columns:
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    for name, f in report.items():
        # SQL ms: the statements' median in-app times, summed over one request's calls
        in_app = sum((q["in_app_p50_ms"] or 0) * q["calls"] for q in f["queries"])
        worst = max((q["execution_ms"] or 0 for q in f["queries"]), default=0)
        table.add_row(
            name,
            str(f["status"]),
            *("-" if f[k] is None else f"{f[k]:.1f}" for k in ("p50_ms", "p95_ms", "max_ms")),
            str(f["statements"]),
            f"{in_app:.1f}",
            f"{worst:.2f}",
        )
    console.print(table)


def show_plans(report: dict[str, Any], console: Console) -> None:
    for name, figures in report.items():
        console.rule(f"{name}  {figures['path']}")
        for query in figures["queries"]:
            console.print(plans.normal(query["sql"]), style="bold", highlight=False)
            console.print(query["plan"], highlight=False, markup=False)
