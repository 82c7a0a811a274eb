"""Bulk intake figures (``app.cli.bench.intake``): a tiny run in every suite, the full one with
``-m bench``.

Full run, printing the figures: ``pytest -m bench tests/bench/test_intake.py -s`` or
``python -m app.cli.bench.intake``.
"""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from app import config
from app.cli.bench import intake as bench_intake

pytestmark = pytest.mark.timeout(900)

# Goal 4 of the performance issue, on a 2-core machine.
ENQUEUES_PER_S = 5_000
EVENTS_PER_S = 2_000


def _run(settings: config.Settings, **sizes: Any) -> dict[str, float]:
    console = Console(width=120)
    figures = bench_intake.measure(settings, console, **sizes)
    bench_intake.show(figures, console)
    return figures


@pytest.mark.broker
def test_intake_bench_smoke(settings: config.Settings) -> None:
    figures = _run(settings, executions=200, actions=2, batch=50, events=200, deep=500, samples=10)
    assert set(figures) == {
        "intake_enqueue_per_s",
        "http_enqueue_per_s",
        "event_post_per_s",
        "events_per_s",
        "deep_fill_per_s",
        "enqueue_per_s_at_100",
        "grant_per_s_at_100",
        "enqueue_per_s_at_500",
        "grant_per_s_at_500",
        "counter_mismatches",
    }
    assert figures.pop("counter_mismatches") == 0
    assert all(value > 0 for value in figures.values())


@pytest.mark.bench
def test_intake_bench_full(settings: config.Settings) -> None:
    figures = _run(settings)
    assert figures["counter_mismatches"] == 0
    assert figures["intake_enqueue_per_s"] >= ENQUEUES_PER_S
    assert figures["http_enqueue_per_s"] >= ENQUEUES_PER_S
    assert figures["events_per_s"] >= EVENTS_PER_S
    # Flat: a line 1,000 times deeper costs no more than twice as much per request.
    for verb in ("enqueue", "grant"):
        assert figures[f"{verb}_per_s_at_100000"] >= figures[f"{verb}_per_s_at_100"] / 2
