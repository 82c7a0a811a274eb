"""Schedule ticks: cron across DST changes, every_s aligned for every beat, missed ticks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policies import ticks

BERLIN = "Europe/Berlin"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_a_daily_cron_fires_at_local_time_across_both_dst_changes() -> None:
    nightly = ticks.Timing(cron="0 3 * * *", timezone=BERLIN)
    # spring forward on 2026-03-29: 03:00 is CET then CEST
    assert nightly.upcoming(utc(2026, 3, 27, 12), 3) == [
        utc(2026, 3, 28, 2),
        utc(2026, 3, 29, 1),
        utc(2026, 3, 30, 1),
    ]
    # fall back on 2026-10-25
    assert nightly.upcoming(utc(2026, 10, 24, 12), 2) == [
        utc(2026, 10, 25, 2),
        utc(2026, 10, 26, 2),
    ]


def test_a_tick_in_the_skipped_hour_fires_once_after_it_and_in_the_repeated_hour_once() -> None:
    half_past_two = ticks.Timing(cron="30 2 * * *", timezone=BERLIN)
    # 02:30 does not exist on 2026-03-29: it fires at 03:00 CEST (01:00 UTC)
    assert half_past_two.upcoming(utc(2026, 3, 28, 12), 2) == [
        utc(2026, 3, 29, 1),
        utc(2026, 3, 30, 0, 30),
    ]
    # 02:30 happens twice on 2026-10-25: it fires once, at the first (00:30 UTC)
    assert half_past_two.upcoming(utc(2026, 10, 24, 12), 2) == [
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ]


def test_every_s_ticks_are_the_same_instants_for_every_beat() -> None:
    every = ticks.Timing(every_s=5)
    assert every.next_after(utc(2026, 1, 1, 0, 0, 1)) == utc(2026, 1, 1, 0, 0, 5)
    assert every.next_after(utc(2026, 1, 1, 0, 0, 5)) == utc(2026, 1, 1, 0, 0, 10)
    assert every.ticks(utc(2026, 1, 1, 0, 0, 5), utc(2026, 1, 1, 0, 0, 15)) == [
        utc(2026, 1, 1, 0, 0, 5),
        utc(2026, 1, 1, 0, 0, 10),
        utc(2026, 1, 1, 0, 0, 15),
    ]


def test_a_one_off_fires_once() -> None:
    once = ticks.Timing(at=datetime(2026, 7, 1, 9, 0), timezone=BERLIN)
    assert once.next_after(utc(2026, 6, 1)) == utc(2026, 7, 1, 7)
    assert once.next_after(utc(2026, 7, 1, 7)) is None
    assert once.upcoming(utc(2026, 6, 1), 5) == [utc(2026, 7, 1, 7)]


@pytest.mark.parametrize(("missed", "fired", "skipped"), [("skip", 1, 5), ("run_once", 2, 4)])
def test_after_downtime_late_ticks_are_skipped_or_run_once(
    missed: str, fired: int, skipped: int
) -> None:
    # Given a 1 s schedule whose beat was away for 5 ticks, back 0.5 s after the 6th
    every = ticks.Timing(every_s=1)
    now = utc(2026, 1, 1, 0, 0, 6) + timedelta(milliseconds=500)
    due = ticks.due(every, utc(2026, 1, 1, 0, 0, 1), now, missed, grace_s=0.9)
    # Then the on-time tick fires, and of the late ones none or the latest
    assert len(due.fire) == fired and due.skipped == skipped
    assert due.fire[-1] == utc(2026, 1, 1, 0, 0, 6)
    if missed == "run_once":
        assert due.fire[0] == utc(2026, 1, 1, 0, 0, 5)
    assert due.next_fire_at == utc(2026, 1, 1, 0, 0, 7)


def test_a_long_downtime_of_a_fast_cron_is_bounded() -> None:
    minutely = ticks.Timing(cron="* * * * *")
    found = minutely.ticks(utc(2026, 1, 1), utc(2026, 3, 1))
    assert len(found) == ticks.MAX_TICKS and found[-1] == utc(2026, 3, 1)


@pytest.mark.parametrize(
    ("timing", "problem"),
    [
        ({"cron": "61 * * * *"}, "Bad minute"),
        ({"cron": "* * * *"}, "5 fields"),
        ({"every_s": 0.5}, "at least 1"),
        ({"cron": "* * * * *", "timezone": "Mars/Base"}, "not an IANA timezone"),
        ({"cron": "* * * * *", "every_s": 5}, "exactly one of"),
        ({}, "exactly one of"),
    ],
)
def test_a_bad_timing_is_refused_naming_the_problem(
    timing: dict[str, object], problem: str
) -> None:
    with pytest.raises(ticks.BadTiming, match=problem):
        ticks.Timing(**timing)  # type: ignore[arg-type]
