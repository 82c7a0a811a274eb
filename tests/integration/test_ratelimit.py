"""The rate limiter's numbered grants against a real Postgres, no broker: the window edge,
several windows, pruning, and a record filled from history when it cannot be trusted.

A test that moves a grant out of its window moves its recorded time back (``rate_grants``),
the time the limiter reads: waiting a minute per step would test the clock, not the limiter.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from app import config, db
from policies import lines, ratelimit
from tests.support import invariants, packs
from tests.support.flow import submit

pytestmark = pytest.mark.timeout(120)


def _load(engine: Engine, tmp_path: Path, name: str | None = None, **policy: Any) -> str:
    return packs.load(
        engine, tmp_path, [{"name": "job", "runner": "noop", "policy": policy}], name=name
    )


def _statuses(engine: Engine, ids: list[int]) -> list[str]:
    with engine.connect() as conn:
        found = dict(
            conn.execute(
                text("SELECT id, status FROM executions WHERE id = ANY(:ids)"), {"ids": ids}
            ).all()
        )
    return [found[i] for i in ids]


def _granted_at(engine: Engine, execution_id: int) -> datetime:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT scheduled_at FROM executions WHERE id = :i"), {"i": execution_id}
        ).scalar_one()


def _move_back(engine: Engine, queue_id: int, seconds: float, upto: int | None = None) -> None:
    """Move the recorded times of the line's grants numbered up to ``upto`` (all: None)
    ``seconds`` back: they keep their order."""
    with db.unit_of_work(engine) as session:
        session.execute(
            text(
                "UPDATE rate_grants SET granted_at = granted_at - make_interval(secs => :s) "
                "WHERE queue_id = :q AND (CAST(:upto AS bigint) IS NULL OR n <= :upto)"
            ),
            {"s": seconds, "q": queue_id, "upto": upto},
        )


def _capacity(
    engine: Engine, settings: config.Settings, queue_id: int
) -> tuple[int | None, datetime | None]:
    with db.unit_of_work(engine) as session:
        line = lines.lock_line(session, settings, queue_id)
        return ratelimit.capacity(session, queue_id, line.limits.rate)


def _admit(engine: Engine, settings: config.Settings, queue_id: int) -> list[int]:
    with db.unit_of_work(engine) as session:
        line = lines.lock_line(session, settings, queue_id)
        return [g.execution_id for g in lines.admit(session, line).grants]


def _record(engine: Engine, queue_id: int) -> list[tuple[int, datetime]]:
    with engine.connect() as conn:
        return [
            (r.n, r.granted_at)
            for r in conn.execute(
                text("SELECT n, granted_at FROM rate_grants WHERE queue_id = :q ORDER BY n"),
                {"q": queue_id},
            )
        ]


def test_a_full_window_frees_a_grant_when_its_oldest_grant_leaves_it(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # Given a line of 10 slots allowed 3 grants a minute, and 5 requests
    ref = _load(engine, tmp_path, concurrency=10, rate_limit={"count": 3, "per_s": 60}) + ".job"
    ids = submit(engine, settings, None, ref, [{}] * 5)
    (queue_id,) = invariants.queue_ids(engine, ref)
    # Then 3 are granted, oldest first, and the window frees one a minute after the first
    assert _statuses(engine, ids) == ["scheduled"] * 3 + ["queued"] * 2
    assert [n for n, _ in _record(engine, queue_id)] == [1, 2, 3]
    assert _capacity(engine, settings, queue_id) == (
        0,
        _granted_at(engine, ids[0]) + timedelta(seconds=60),
    )
    # When the first grant is just inside the window, nothing more is granted
    _move_back(engine, queue_id, 59, upto=1)
    first = _record(engine, queue_id)[0][1]
    assert _admit(engine, settings, queue_id) == []
    assert _capacity(engine, settings, queue_id) == (0, first + timedelta(seconds=60))
    # When it has left the window, exactly one more is granted: the oldest waiting
    _move_back(engine, queue_id, 2, upto=1)
    assert _admit(engine, settings, queue_id) == [ids[3]]
    assert _statuses(engine, ids) == ["scheduled"] * 4 + ["queued"]
    # and the window is full again until the second grant leaves it
    assert _capacity(engine, settings, queue_id) == (
        0,
        _granted_at(engine, ids[1]) + timedelta(seconds=60),
    )
    assert invariants.counter_mismatches(engine) == []


def test_every_window_is_kept_and_the_fullest_says_when_to_wake(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # Given 2 grants a minute and 4 an hour
    windows = [{"count": 2, "per_s": 60}, {"count": 4, "per_s": 3600}]
    ref = _load(engine, tmp_path, concurrency=10, rate_limit=windows) + ".job"
    ids = submit(engine, settings, None, ref, [{}] * 7)
    (queue_id,) = invariants.queue_ids(engine, ref)
    assert _statuses(engine, ids).count("scheduled") == 2
    # When the minute is over, the minute allows 2 and the hour 2: 2 more
    _move_back(engine, queue_id, 61)
    assert _admit(engine, settings, queue_id) == ids[2:4]
    # When that minute is over too, the hour is full: it wakes the line an hour after the first
    _move_back(engine, queue_id, 61)
    assert _admit(engine, settings, queue_id) == []
    first = _record(engine, queue_id)[0][1]
    assert _capacity(engine, settings, queue_id) == (0, first + timedelta(seconds=3600))


def test_the_record_keeps_only_what_a_window_can_need(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # Given 2 grants a minute, granted 20 times over
    ref = _load(engine, tmp_path, concurrency=100, rate_limit={"count": 2, "per_s": 60}) + ".job"
    ids = submit(engine, settings, None, ref, [{}] * 30)
    (queue_id,) = invariants.queue_ids(engine, ref)
    for _ in range(9):
        _move_back(engine, queue_id, 61)
        assert len(_admit(engine, settings, queue_id)) == 2
    # Then 20 were granted in seq order, and only the last count + 1 grants are kept
    assert _statuses(engine, ids) == ["scheduled"] * 20 + ["queued"] * 10
    assert [n for n, _ in _record(engine, queue_id)] == [18, 19, 20]
    with engine.connect() as conn:
        total, pruned = conn.execute(
            text("SELECT rate_grants_total, rate_grants_pruned FROM queues WHERE id = :q"),
            {"q": queue_id},
        ).one()
    assert (total, pruned) == (20, 17)
    assert invariants.fifo_violations(engine, [queue_id]) == 0


def test_a_line_that_becomes_rate_limited_counts_the_grants_made_before(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # Given a line without a rate limit that granted 3 (recorded nowhere but its history)
    name = _load(engine, tmp_path, concurrency=20)
    ref = f"{name}.job"
    submit(engine, settings, None, ref, [{}] * 3)
    (queue_id,) = invariants.queue_ids(engine, ref)
    assert _record(engine, queue_id) == []
    # When it gets 4 grants a minute, the minute has room for 1 only
    _load(engine, tmp_path, name, concurrency=20, rate_limit={"count": 4, "per_s": 60})
    later = submit(engine, settings, None, ref, [{}] * 3)
    assert _statuses(engine, later) == ["scheduled", "queued", "queued"]
    # When the limit goes, 2 more are granted; when it comes back at 7 a minute, those count
    _load(engine, tmp_path, name, concurrency=20)
    assert _admit(engine, settings, queue_id) == later[1:]
    _load(engine, tmp_path, name, concurrency=20, rate_limit={"count": 7, "per_s": 60})
    last = submit(engine, settings, None, ref, [{}] * 2)
    assert _statuses(engine, last) == ["scheduled", "queued"]
    assert [n for n, _ in _record(engine, queue_id)] == [1, 2, 3, 4, 5, 6, 7]


def test_a_count_grown_past_what_was_kept_is_filled_from_history(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # Given 2 grants per 0.4 s, granted 6 times in real time (3 kept)
    name = _load(engine, tmp_path, concurrency=20, rate_limit={"count": 2, "per_s": 0.4})
    ref = f"{name}.job"
    ids = submit(engine, settings, None, ref, [{}] * 10)
    (queue_id,) = invariants.queue_ids(engine, ref)
    while _statuses(engine, ids).count("scheduled") < 6:
        time.sleep(0.45)
        _admit(engine, settings, queue_id)
    assert [n for n, _ in _record(engine, queue_id)] == [4, 5, 6]
    # When the limit becomes 5 a minute, the 6 grants of the last seconds fill it: none more
    _load(engine, tmp_path, name, concurrency=20, rate_limit={"count": 5, "per_s": 60})
    assert _admit(engine, settings, queue_id) == []
    assert [n for n, _ in _record(engine, queue_id)] == [1, 2, 3, 4, 5, 6]
    assert _statuses(engine, ids).count("scheduled") == 6
