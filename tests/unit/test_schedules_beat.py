"""The beat's sleep between two looks at the schedules: no database."""

from __future__ import annotations

import pytest

from tasks import beat


@pytest.mark.parametrize(
    ("next_due_s", "wait"),
    [(None, 1.0), (30.0, 1.0), (0.4, 0.4), (0.0, beat.MIN_WAIT_S), (-3.0, beat.MIN_WAIT_S)],
)
def test_a_beat_sleeps_until_the_next_tick_and_at_most_a_second(
    next_due_s: float | None, wait: float
) -> None:
    assert beat.wait_s(next_due_s) == pytest.approx(wait)
