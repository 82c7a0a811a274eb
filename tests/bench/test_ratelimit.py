"""Rate-limit figures (``app.cli.bench.ratelimit``): a tiny run in every suite, the full one
with ``-m bench``.

Full run, printing the figures: ``pytest -m bench tests/bench/test_ratelimit.py -s`` or
``python -m app.cli.bench.ratelimit``.
"""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from app import config
from app.cli.bench import ratelimit as bench_ratelimit

pytestmark = pytest.mark.timeout(900)


def _run(settings: config.Settings, **sizes: Any) -> dict[str, float]:
    console = Console(width=120)
    figures = bench_ratelimit.measure(settings, console, **sizes)
    bench_ratelimit.show(figures, console)
    return figures


def test_ratelimit_bench_smoke(settings: config.Settings) -> None:
    figures = _run(settings, grants=30, prior=2_000)
    assert set(figures) == {"grant_per_s_free", "grant_per_s_small", "grant_per_s_large"}
    assert all(value > 0 for value in figures.values())


@pytest.mark.bench
def test_ratelimit_bench_full(settings: config.Settings) -> None:
    figures = _run(settings)
    # Flat: a window of count 100,000 holding 95,000 grants costs a grant no more than twice
    # what a window of count 10 does (before numbered grants: 1.4 against 23 grants/s).
    assert figures["grant_per_s_large"] >= figures["grant_per_s_small"] / 2
