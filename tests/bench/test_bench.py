"""The benchmark itself: a short run in every suite, the full 10,000 with ``-m bench``.

Full run, printing the figures: ``pytest -m bench tests/bench -s`` or ``usher bench``.
"""

from __future__ import annotations

import pytest
from rich.console import Console

from app import bench, config

pytestmark = pytest.mark.timeout(900)


def _run(settings: config.Settings, executions: int) -> list[bench.Figures]:
    console = Console(width=120)
    figures = bench.run(
        settings, executions=executions, workers=2, concurrency=2, limit=4, console=console
    )
    bench.show(figures, settings.broker_url or "filesystem://", console)
    return figures


def _check(figures: list[bench.Figures], executions: int) -> None:
    usher, plain = figures
    assert (usher.system, plain.system) == ("usher", "plain celery")
    assert usher.executions == plain.executions == executions
    assert usher.per_second > 0 and plain.per_second > 0
    assert usher.grant_latency_p50_ms is not None and usher.grant_latency_p50_ms >= 0


@pytest.mark.broker
def test_bench_smoke(settings: config.Settings) -> None:
    _check(_run(settings, 200), 200)


@pytest.mark.bench
def test_bench_ten_thousand(settings: config.Settings) -> None:
    _check(_run(settings, 10_000), 10_000)
