"""Admission against a real Postgres, no broker: the SQL that keeps FIFO and the limit."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from app import config, db
from app.errors import AlreadyFinished, InvalidParameters, QueueFull, UnknownAction
from policies import admission, lines
from tests.support import invariants, packs
from tests.support.flow import submit

pytestmark = pytest.mark.timeout(120)


def _pack(engine: Engine, tmp_path: Path, **policy: object) -> str:
    return packs.load(
        engine,
        tmp_path,
        [
            {
                "name": "job",
                "runner": "noop",
                "policy": policy,
                "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}},
            }
        ],
    )


def test_grants_up_to_the_limit_in_seq_order(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # Given a line with limit 2
    ref = _pack(engine, tmp_path, concurrency=2) + ".job"
    # When five executions arrive
    ids = submit(engine, settings, None, ref, [{"n": i} for i in range(5)])
    # Then the first two hold the slots and the rest wait in order
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, seq, status FROM executions ORDER BY seq")).all()
    assert [r.status for r in rows] == ["scheduled"] * 2 + ["queued"] * 3
    assert [r.id for r in rows] == ids
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    with db.unit_of_work(engine) as session:
        assert admission.position(session, ids[2]) == 1
        assert admission.position(session, ids[4]) == 3
        assert admission.position(session, ids[0]) is None
    assert invariants.counter_mismatches(engine) == []


def test_release_grants_the_next_in_the_same_transaction(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    ref = _pack(engine, tmp_path, concurrency=1) + ".job"
    first, second = submit(engine, settings, None, ref, [{}, {}])
    with db.unit_of_work(engine) as session:
        claimed = admission.claim(session, first, 1, "w/1", 15)
        assert claimed is not None and claimed.action_ref == ref
    with db.unit_of_work(engine) as session:
        released = admission.release(
            session, settings, admission.Ended(first, 1, "succeeded", {"ok": 1})
        )
    assert [g.execution_id for g in released.grants] == [second]
    # A second signal for the same attempt changes nothing.
    with db.unit_of_work(engine) as session:
        assert (
            admission.release(session, settings, admission.Ended(first, 1, "failed")).status is None
        )
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT status, result FROM executions WHERE id = :i"), {"i": first}
        ).one()
    assert row.status == "succeeded" and row.result == {"ok": 1}
    assert invariants.counter_mismatches(engine) == []


def test_claim_and_release_are_fenced_by_attempt(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    ref = _pack(engine, tmp_path, concurrency=1) + ".job"
    (execution_id,) = submit(engine, settings, None, ref, [{}])
    with db.unit_of_work(engine) as session:
        assert admission.claim(session, execution_id, 2, "stale/1", 15) is None
        assert admission.claim(session, execution_id, 1, "w/1", 15) is not None
        # A duplicate message for the same attempt is not a second grant.
        assert admission.claim(session, execution_id, 1, "w/2", 15) is None
        # The same process asking again (its first reply was lost with its connection) is.
        assert admission.claim(session, execution_id, 1, "w/1", 15) is not None
    with db.unit_of_work(engine) as session:
        assert (
            admission.release(
                session, settings, admission.Ended(execution_id, 7, "succeeded")
            ).status
            is None
        )
        assert admission.renew(session, [(execution_id, 1)], 15) == {(execution_id, 1)}
        assert admission.renew(session, [(execution_id, 2)], 15) == set()
    assert invariants.counter_mismatches(engine) == []


def test_queue_full_refuses_and_queues_nothing(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    ref = _pack(engine, tmp_path, concurrency=1, max_queue_length=2) + ".job"
    submit(engine, settings, None, ref, [{}, {}, {}])  # 1 scheduled + 2 waiting
    with pytest.raises(QueueFull), db.unit_of_work(engine) as session:
        admission.enqueue(session, settings, ref, {})
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM executions")).scalar_one() == 3
    assert invariants.counter_mismatches(engine) == []


def test_unknown_action_and_bad_parameters(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    ref = _pack(engine, tmp_path) + ".job"
    with pytest.raises(UnknownAction), db.unit_of_work(engine) as session:
        admission.enqueue(session, settings, "nope.nothing", {})
    with (
        pytest.raises(InvalidParameters, match=r"parameters\.n"),
        db.unit_of_work(engine) as session,
    ):
        admission.enqueue(session, settings, ref, {"n": "not a number"})


def test_cancel_queued_scheduled_and_running(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    ref = _pack(engine, tmp_path, concurrency=2) + ".job"
    running, scheduled, queued, nxt1, nxt2 = submit(engine, settings, None, ref, [{}] * 5)
    with db.unit_of_work(engine) as session:
        assert admission.claim(session, running, 1, "w/1", 15)
    with db.unit_of_work(engine) as session:
        assert admission.cancel(session, settings, queued).grants == []
    with db.unit_of_work(engine) as session:
        cancelled = admission.cancel(session, settings, scheduled)
    assert cancelled.previous_status == "scheduled"
    assert [g.execution_id for g in cancelled.grants] == [nxt1]
    with db.unit_of_work(engine) as session:
        cancelled = admission.cancel(session, settings, running)
    assert cancelled.previous_status == "running"
    assert [g.execution_id for g in cancelled.grants] == [nxt2]
    # The cancelled worker's late report changes nothing.
    with db.unit_of_work(engine) as session:
        assert (
            admission.release(session, settings, admission.Ended(running, 1, "succeeded")).status
            is None
        )
    with pytest.raises(AlreadyFinished), db.unit_of_work(engine) as session:
        admission.cancel(session, settings, running)
    mismatches = invariants.counter_mismatches(engine)
    assert mismatches == []
    with engine.connect() as conn:
        q = conn.execute(text("SELECT * FROM queues")).one()
    assert (q.total_cancelled, q.active_count, q.queue_length) == (3, 2, 0)


def test_queue_timeout_expires_waiting_executions(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    ref = _pack(engine, tmp_path, concurrency=1, queue_timeout_s=60) + ".job"
    ids = submit(engine, settings, None, ref, [{}] * 4)
    with engine.begin() as conn:
        for table, column in (
            ("execution_requests", "enqueued_at"),
            ("execution_state", "queued_at"),
        ):
            conn.execute(
                text(
                    f"UPDATE {table} SET {column} = {column} - interval '2 minutes' "
                    "WHERE id = ANY(:ids)"
                ),
                {"ids": ids[1:3]},
            )
        queue_id = conn.execute(text("SELECT id FROM queues")).scalar_one()
    with db.unit_of_work(engine) as session:
        line = lines.lock_line(session, settings, queue_id)
        assert lines.expire(session, line) == 2
    with engine.connect() as conn:
        got = dict(conn.execute(text("SELECT id, status FROM executions")).all())
    assert [got[i] for i in ids] == ["scheduled", "expired", "expired", "queued"]
    assert invariants.counter_mismatches(engine) == []


def test_a_retry_back_in_line_waits_its_own_queue_timeout(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # A backoff the release's own admit cannot outlast, so the retry does not take the slot
    retry = {"max_retries": 1, "strategy": "fixed", "initial_delay_ms": 500, "jitter": False}
    ref = _pack(engine, tmp_path, concurrency=1, queue_timeout_s=60, retry=retry) + ".job"
    first, second = submit(engine, settings, None, ref, [{}] * 2)
    # Given a first attempt that was enqueued long ago and failed after a long run
    with db.unit_of_work(engine) as session:
        assert admission.claim(session, first, 1, "w/1", 15)
    with engine.begin() as conn:
        for table, column in (
            ("execution_requests", "enqueued_at"),
            ("execution_state", "queued_at"),
        ):
            conn.execute(
                text(f"UPDATE {table} SET {column} = {column} - interval '1 hour' WHERE id = :id"),
                {"id": first},
            )
    with db.unit_of_work(engine) as session:
        released = admission.release(
            session, settings, admission.Ended(first, 1, "failed", error="boom")
        )
    assert released.status == "retrying"
    time.sleep(0.6)  # the backoff is over
    # When its retry rejoins the line behind the execution now holding the slot, and a sweep
    # runs the queue timeout over the line
    with db.unit_of_work(engine) as session:
        line = lines.lock_line_of(session, settings, first)
        assert lines.requeue_due(session, line).grants == []
        expired = lines.expire(session, line)
    # Then the retry waits in line: it has waited milliseconds, not an hour
    assert expired == 0
    with engine.connect() as conn:
        got = dict(conn.execute(text("SELECT id, status FROM executions")).all())
    assert (got[first], got[second]) == ("queued", "scheduled")
    assert invariants.counter_mismatches(engine) == []


def test_limits_resolve_action_over_pack_over_default(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # default 10 (settings), pack 3, one action overrides with 1
    name = packs.load(
        engine,
        tmp_path,
        [
            {"name": "own", "runner": "noop", "policy": {"concurrency": 1}},
            {"name": "inherits", "runner": "noop"},
        ],
        policy={"concurrency": 3},
    )
    bare = packs.load(engine, tmp_path, [{"name": "bare", "runner": "noop"}])
    granted = {}
    for ref in (f"{name}.own", f"{name}.inherits", f"{bare}.bare"):
        submit(engine, settings, None, ref, [{}] * 12)
        with engine.connect() as conn:
            granted[ref.split(".")[1]] = conn.execute(
                text(
                    "SELECT count(*) FROM executions e JOIN actions a ON a.id = e.action_id "
                    "WHERE a.ref = :r AND e.status = 'scheduled'"
                ),
                {"r": ref},
            ).scalar_one()
    assert granted == {"own": 1, "inherits": 3, "bare": settings.default_max_concurrent}


def test_partitioned_lines_have_their_own_limit_and_order(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    name = packs.load(
        engine,
        tmp_path,
        [
            {
                "name": "restart",
                "runner": "noop",
                "policy": {"concurrency": 1, "partition_by": ["host"]},
                "parameters": {"type": "object", "properties": {"host": {"type": "string"}}},
            }
        ],
    )
    submit(
        engine,
        settings,
        None,
        f"{name}.restart",
        [{"host": h} for h in ["a", "b", "a", "c", "b", "a"]],
    )
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT q.partition_key, e.seq, e.status FROM executions e "
                "JOIN queues q ON q.id = e.queue_id ORDER BY q.partition_key, e.seq"
            )
        ).all()
    lines: dict[str, list[tuple[int, str]]] = {}
    for r in rows:
        lines.setdefault(r.partition_key, []).append((r.seq, r.status))
    assert lines == {
        "host=a": [(1, "scheduled"), (2, "queued"), (3, "queued")],
        "host=b": [(1, "scheduled"), (2, "queued")],
        "host=c": [(1, "scheduled")],
    }


def test_concurrent_clients_never_break_the_limit_or_fifo(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    """Eight threads enqueue, claim and release at once on one line with limit 3."""
    ref = _pack(engine, tmp_path, concurrency=3) + ".job"
    errors: list[BaseException] = []

    def producer() -> None:
        try:
            submit(engine, settings, None, ref, [{}] * 40)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    def consumer(stop: threading.Event) -> None:
        try:
            while not stop.is_set() or invariants.unfinished(engine, ref):
                with engine.connect() as conn:
                    ids = (
                        conn.execute(
                            text(
                                "SELECT id FROM executions WHERE status = 'scheduled' "
                                "ORDER BY random() LIMIT 1"
                            )
                        )
                        .scalars()
                        .all()
                    )
                for execution_id in ids:
                    with db.unit_of_work(engine) as session:
                        claimed = admission.claim(session, execution_id, 1, "t/1", 15)
                    if claimed:
                        with db.unit_of_work(engine) as session:
                            admission.release(
                                session, settings, admission.Ended(execution_id, 1, "succeeded")
                            )
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    stop = threading.Event()
    producers = [threading.Thread(target=producer) for _ in range(4)]
    consumers = [threading.Thread(target=consumer, args=(stop,)) for _ in range(4)]
    for thread in producers + consumers:
        thread.start()
    for thread in producers:
        thread.join()
    stop.set()
    for thread in consumers:
        thread.join(timeout=90)
    assert errors == []
    invariants.check_line(engine, ref, limit=3)
    assert invariants.max_active(engine, invariants.queue_ids(engine, ref)) == 3


def test_migrations_match_the_models(engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from app.models import Base

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def _claimed(engine: Engine, ids: list[int]) -> None:
    for execution_id in ids:
        with db.unit_of_work(engine) as session:
            assert admission.claim(session, execution_id, 1, "w/1", 15) is not None


@pytest.mark.parametrize(
    ("pack_policy", "action_policy", "limit"),
    [
        ({"concurrency": 2}, {}, 2),
        ({"concurrency": 2}, {"concurrency": 3}, 3),
        ({}, {}, 10),
        ({"concurrency": 2.0}, {}, 2),  # JSON Schema's integer takes 2.0; so must the SQL
    ],
)
def test_finish_in_one_statement_resolves_the_limit_like_python(
    engine: Engine,
    settings: config.Settings,
    tmp_path: Path,
    pack_policy: dict[str, int],
    action_policy: dict[str, int],
    limit: int,
) -> None:
    # Given a full line whose limit comes from the action, the pack or the default (10)
    action = {"name": "job", "runner": "noop", "policy": action_policy}
    ref = packs.load(engine, tmp_path, [action], policy=pack_policy) + ".job"
    ids = submit(engine, settings, None, ref, [{}] * (limit + 3))
    _claimed(engine, ids[:limit])
    # When the single-statement finish ends two attempts on an autocommit connection
    hot = db.Hot(settings.database_url or "")
    try:
        first = hot.run(
            lambda c: admission.finish(
                c, settings, admission.Ended(ids[0], 1, "succeeded", {"ok": 1})
            )
        )
        again = hot.run(
            lambda c: admission.finish(c, settings, admission.Ended(ids[0], 1, "succeeded"))
        )
        second = hot.run(
            lambda c: admission.finish(
                c, settings, admission.Ended(ids[1], 1, "cancelled", None, "stop")
            )
        )
    finally:
        hot.close()
    # Then each freed slot went to the next in line, once, and the counters agree
    assert first is not None and [g.execution_id for g in first.grants] == [ids[limit]]
    assert again is not None and again.status is None and again.grants == []
    assert second is not None and [g.execution_id for g in second.grants] == [ids[limit + 1]]
    assert invariants.max_active(engine, invariants.queue_ids(engine, ref)) == limit
    assert invariants.fifo_violations(engine, invariants.queue_ids(engine, ref)) == 0
    assert invariants.counter_mismatches(engine) == []
    with engine.connect() as conn:
        history = conn.execute(
            text("SELECT execution_id, outcome FROM attempts ORDER BY execution_id")
        ).all()
    assert [tuple(r) for r in history] == [(ids[0], "succeeded"), (ids[1], "cancelled")]


def test_finish_leaves_rate_limited_and_paused_lines_to_the_policy(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # A rate-limited line needs Python's policy: finish changes nothing and says so
    limited = _pack(engine, tmp_path, concurrency=1, rate_limit={"count": 5, "per_s": 1}) + ".job"
    first, second = submit(engine, settings, None, limited, [{}, {}])
    _claimed(engine, [first])
    with db.unit_of_work(engine) as session:
        assert admission.finish(session, settings, admission.Ended(first, 1, "succeeded")) is None
        # release takes the full path and still grants the next one
        assert [
            g.execution_id
            for g in admission.release(
                session, settings, admission.Ended(first, 1, "succeeded")
            ).grants
        ] == [second]
    # A paused line: the slot is freed, nothing is granted
    paused = _pack(engine, tmp_path, concurrency=1) + ".job"
    one, two = submit(engine, settings, None, paused, [{}, {}])
    _claimed(engine, [one])
    with db.unit_of_work(engine) as session:
        session.execute(text("UPDATE actions SET paused_at = now() WHERE ref = :r"), {"r": paused})
    with db.unit_of_work(engine) as session:
        done = admission.finish(session, settings, admission.Ended(one, 1, "succeeded"))
    assert done is not None and done.status == "succeeded" and done.grants == []
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM executions WHERE id = :i"), {"i": two})
        assert status.scalar_one() == "queued"
    assert invariants.counter_mismatches(engine) == []
