"""The retention soak (``app.cli.bench.soak``): a bounded run in every suite, the 20-minute
one with ``-m slow`` (or ``usher bench --retention 20``), its figures in docs/scaling.md.

Real workers and a real beat on a scratch database with ``USHER_RETENTION_S=60``: the
bounded run lasts past the retention, so its sweeper must have pruned what finished more
than a minute ago while the load went on.
"""

from __future__ import annotations

import pytest
from rich.console import Console

from app import config
from app.cli.bench import soak

pytestmark = pytest.mark.timeout(600)


def test_the_sweeper_keeps_a_minute_of_history_under_a_steady_load(
    settings: config.Settings,
) -> None:
    # When a steady load runs for 100 s with a retention of 60 s
    rate = 20
    found = soak.run(settings, minutes=2, rate=rate, console=Console(width=200), minute_s=50)
    # Then everything asked for ran (5 lines: 4 by request, 1 by the rule's events)
    last = found[-1]
    made = sum(m.enqueued_per_s for m in found) * 50
    assert made >= 100 * rate
    assert last.completed_per_s >= 0.8 * last.enqueued_per_s
    # And the executions left are about the last minute's, not the whole run's
    assert last.tables["executions"]["rows"] < 0.85 * made
    assert last.tables["events"]["rows"] < 0.85 * 100 * max(rate // 5, 1)


@pytest.mark.slow
def test_twenty_minutes_of_history_stay_flat(settings: config.Settings) -> None:
    console = Console(width=200)
    found = soak.run(settings, minutes=20, rate=50, console=console)
    console.print(soak.table(found))
    rows = [m.tables["executions"]["rows"] for m in found]
    sizes = [sum(t["bytes"] for t in m.tables.values()) for m in found]
    # Flat after the first minutes: within 25 % of minute 3, rows and bytes
    assert max(rows[3:]) <= 1.25 * rows[2] and max(sizes[5:]) <= 1.25 * sizes[4]
    # And the costs at minute 20 within 0.9x of minute 2: intake (ms per batch) and rates
    assert found[-1].enqueued_per_s >= 0.9 * found[1].enqueued_per_s
    assert found[-1].completed_per_s >= 0.9 * found[1].completed_per_s
    assert (found[-1].enqueue_ms_p50 or 0) <= (found[1].enqueue_ms_p50 or 0) / 0.9
