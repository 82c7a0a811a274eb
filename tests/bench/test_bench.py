"""The benchmark itself: a short run in every suite, the full 10,000 with ``-m bench``.

Full run, printing the figures: ``pytest -m bench tests/bench -s`` or ``usher bench``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from app import config
from app.cli.bench import core as bench
from app.cli.bench import plot as bench_plot
from app.cli.bench import report as bench_report

pytestmark = pytest.mark.timeout(900)


def _run(settings: config.Settings, executions: int, plot: Path) -> bench_report.Report:
    console = Console(width=160)
    report = bench.run(settings, executions=executions, actions=4, limit=3, console=console)
    bench_plot.plot(report, plot)
    bench_report.show(report, console)
    return report


def _check(report: bench_report.Report, executions: int) -> None:
    usher, plain = report.runs
    assert (usher.system, plain.system) == ("usher", "plain celery")
    assert usher.executions == plain.executions == executions
    assert usher.per_second > 0 and plain.per_second > 0
    assert usher.handoff_p50_ms is not None and usher.handoff_p50_ms >= 0
    assert usher.wait_p99_ms is not None and usher.wait_p99_ms >= usher.wait_p50_ms  # type: ignore[operator]
    # The run proves the invariants, or the figures mean nothing.
    assert report.invariants == {
        "lost": 0,
        "peak_over_limit": 0,
        "fifo_violations": 0,
        "counter_mismatches": 0,
    }
    assert report.rss_mb["pool process"] >= report.rss_mb["pool process at start"] > 0
    idle = report.idle_handoff_ms
    assert idle["p50"] is not None and idle["p99"] is not None and idle["p99"] >= idle["p50"]
    assert report.plot and Path(report.plot).stat().st_size > 10_000


@pytest.mark.broker
def test_bench_smoke(settings: config.Settings, tmp_path: Path) -> None:
    _check(_run(settings, 300, plot=tmp_path / "bench.png"), 300)


@pytest.mark.bench
def test_bench_ten_thousand(settings: config.Settings, tmp_path: Path) -> None:
    _check(_run(settings, 10_000, plot=tmp_path / "bench.png"), 10_000)
