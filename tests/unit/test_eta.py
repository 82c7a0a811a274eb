"""The start estimate of a waiting execution, from its line's slots."""

from __future__ import annotations

import pytest

from policies import eta


def test_eight_waiting_on_two_slots_of_one_second_runs_start_within_four_seconds() -> None:
    # Given both slots just taken by 1 s runs (the line: it emptied in about 4 s)
    waits = [eta.wait_s(p, 2, 1.0, [0.0, 0.0]) for p in range(1, 9)]
    # Then two start at each second
    assert waits == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]


def test_a_slot_that_has_run_longer_frees_first_and_an_idle_one_is_free_now() -> None:
    assert eta.wait_s(1, 3, 10.0, [9.0, 2.0]) == 0.0  # the third slot is idle
    assert eta.wait_s(2, 3, 10.0, [9.0, 2.0]) == pytest.approx(1.0)
    assert eta.wait_s(3, 3, 10.0, [9.0, 2.0]) == pytest.approx(8.0)
    assert eta.wait_s(4, 3, 10.0, [9.0, 2.0]) == pytest.approx(10.0)  # the idle one again
    assert eta.wait_s(1, 1, 1.0, [5.0]) == 0.0  # overdue: it frees any moment


def test_a_deep_line_is_a_steady_pace_past_the_simulated_places() -> None:
    deep = eta.wait_s(eta.SIMULATED + 1000, 4, 2.0, [])
    assert deep == pytest.approx((eta.SIMULATED + 1000 - 1) // 4 * 2.0, abs=2.0)
