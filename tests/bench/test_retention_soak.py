"""The retention soak (``app.cli.bench.soak``): a bounded run in every suite, the 20-minute
one with ``-m slow`` (or ``usher bench --retention 20``), its figures in docs/scaling.md.

Real workers and a real beat on a scratch database with ``USHER_RETENTION_S=60``: the
bounded run lasts past the retention, so its sweeper must have pruned what finished more
than a minute ago while the load went on.
"""

from __future__ import annotations

import statistics

import pytest
from rich.console import Console

from app import config
from app.cli.bench import soak

pytestmark = pytest.mark.timeout(600)


def test_the_sweeper_keeps_a_minute_of_history_under_a_steady_load(
    settings: config.Settings,
) -> None:
    # When a steady load runs for 75 s with a retention of 60 s
    rate = 20
    [last] = soak.run(settings, minutes=1, rate=rate, console=Console(width=200), minute_s=75)
    # Then what was asked for ran (4 lines by request, a fifth by the rule's events)
    assert last.enqueued_per_s >= rate and last.completed_per_s >= 0.8 * last.enqueued_per_s
    # And no execution kept finished longer ago than the retention, a sweep and a margin
    # for this busy machine, while the run made ones older than that
    assert 0 < last.oldest_finished_s <= soak.RETENTION_S + 10
    made = last.enqueued_per_s * 75
    assert last.tables["execution_requests"]["rows"] < made
    assert last.tables["execution_state"]["rows"] == last.tables["execution_requests"]["rows"]


@pytest.mark.slow
def test_twenty_minutes_of_history_stay_flat(settings: config.Settings) -> None:
    console = Console(width=200)
    found = soak.run(settings, minutes=20, rate=50, console=console)
    console.print(soak.table(found))
    rows = [m.tables["execution_requests"]["rows"] for m in found]
    sizes = [sum(t["bytes"] for t in m.tables.values()) for m in found]
    # Flat after the first minutes: within 25 % of minute 3, rows and bytes
    assert max(rows[3:]) <= 1.25 * rows[2] and max(sizes[5:]) <= 1.25 * sizes[4]
    # And the rates at minute 20 within 0.9x of minute 2, and intake's cost (ms a batch,
    # noisy from one minute to the next: the means of minutes 2-7 and 15-20) too
    assert found[-1].enqueued_per_s >= 0.9 * found[1].enqueued_per_s
    assert found[-1].completed_per_s >= 0.9 * found[1].completed_per_s
    early = statistics.mean(m.enqueue_ms_p50 or 0 for m in found[1:7])
    late = statistics.mean(m.enqueue_ms_p50 or 0 for m in found[14:20])
    assert late <= early / 0.9
