"""Retention (CONTRACT "History and retention", policies.retention) against a real Postgres:
what is older than USHER_RETENTION_S goes in bounded batches, the rest stays, and no
counter moves. History is made the way the API and the workers make it (enqueue, claim,
release, cancel, events processed by the worker's policy), then made old by moving its
timestamps back: the 20-minute run at a steady load is tests/bench/retention_soak.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text

from app import config, db
from policies import admission, dlq, events, retention
from tests.support import packs
from tests.support.flow import finish, submit
from tests.support.workers import REPO
from web import metrics

HOUR = 3600
FAMILIES = (
    "usher_events_total",
    "usher_enforcements_total",
    "usher_requests_rejected_total",
    "usher_schedule_fires_total",
)


@pytest.fixture
def kept(settings: config.Settings) -> config.Settings:
    return settings.model_copy(update={"retention_s": HOUR, "audit_retention_s": 2 * HOUR})


@pytest.fixture
def pack(engine: Engine, tmp_path: Path) -> str:
    name = "ret"
    folder = packs.write_folder(
        tmp_path / name,
        {"name": name},
        [
            {"name": "job", "runner": "noop", "policy": {"concurrency": 1, "max_queue_length": 2}},
        ],
    )
    (folder / "rules").mkdir()
    (folder / "rules" / "on_tick.yaml").write_text(
        "name: on_tick\ntrigger: tick\naction: ret.job\n"
    )
    packs.load_folder(engine, tmp_path)
    return name


def _old(engine: Engine, table: str, column: str, ids: list[int], by_s: int) -> None:
    """Move the rows' ``column`` back by ``by_s``: history made long ago."""
    with engine.begin() as conn:
        conn.execute(
            text(
                f"UPDATE {table} SET {column} = {column} - make_interval(secs => :s) "
                "WHERE id = ANY(:ids)"
            ),
            {"s": by_s, "ids": ids},
        )


def _ids(engine: Engine, table: str) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(text(f"SELECT id FROM {table}")).scalars())


def _counters(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("""SELECT total_enqueued, total_completed, total_failed, total_cancelled,
                               total_expired FROM queues ORDER BY id""")
            ).all()
        )


def _families(engine: Engine, settings: config.Settings) -> dict[str, dict[Any, float]]:
    """The history counters of /metrics, as rendered: family -> labels -> value."""
    rendered = metrics.render(engine, settings.default_max_concurrent).decode()
    found: dict[str, dict[Any, float]] = {name: {} for name in FAMILIES}
    for family in text_string_to_metric_families(rendered):
        for sample in family.samples:
            if sample.name in found:
                found[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return found


def _dead(engine: Engine, settings: config.Settings, execution_id: int) -> None:
    with db.unit_of_work(engine) as session:
        assert admission.claim(session, execution_id, 1, "w", 30) is not None
    with db.unit_of_work(engine) as session:
        admission.release(
            session,
            settings,
            admission.Ended(execution_id, 1, "failed", error="boom", transient=False),
        )


def test_history_past_the_retention_goes_and_the_rest_stays(
    engine: Engine, kept: config.Settings, pack: str
) -> None:
    ref = f"{pack}.job"
    # Given finished executions: succeeded, cancelled, dead (one still in the DLQ)
    done = submit(engine, kept, None, ref, [{"n": 1}])
    finish(engine, kept, done[0])
    cancelled = submit(engine, kept, None, ref, [{"n": 2}])
    with db.unit_of_work(engine) as session:
        admission.cancel(session, kept, cancelled[0])
    dead, purged = submit(engine, kept, None, ref, [{"n": 3}, {"n": 4}])
    _dead(engine, kept, dead)
    finish(engine, kept, purged)  # the line frees for the next
    [later] = submit(engine, kept, None, ref, [{"n": 5}])
    _dead(engine, kept, later)
    with db.unit_of_work(engine) as session:
        # `later` leaves the dead-letter queue (purged); `dead` stays in it
        session.execute(
            text("UPDATE execution_state SET dlq_cleared_at = clock_timestamp() WHERE id = :id"),
            {"id": later},
        )
        assert dlq.dead_ids(session) == [dead]
    # And events: one whose enforcement ran an execution, one no rule took, one failed
    with db.unit_of_work(engine) as session:
        ran = events.store(session, "tick", {})
        unmatched = events.store(session, "nobody.listens", {})
        failed = events.store(session, "tick", {})
    for event_id in (ran, unmatched):
        with db.unit_of_work(engine) as session:
            events.process(session, kept, event_id)
    with db.unit_of_work(engine) as session:
        session.execute(
            text("UPDATE events SET failed_at = clock_timestamp(), error = 'x' WHERE id = :id"),
            {"id": failed},
        )
    with engine.connect() as conn:
        by_event = conn.execute(
            text("SELECT execution_id FROM enforcements WHERE event_id = :e"), {"e": ran}
        ).scalar_one()
    finish(engine, kept, by_event)
    # And the newest one stays young (it is not even finished); the rest is two hours old
    young = submit(engine, kept, None, ref, [{"n": 6}])
    finished = [done[0], cancelled[0], dead, purged, later, by_event]
    _old(engine, "execution_state", "finished_at", finished, 2 * HOUR)
    _old(engine, "execution_state", "dlq_cleared_at", [later], 2 * HOUR)
    _old(engine, "events", "received_at", [ran, unmatched, failed], 2 * HOUR)
    counters, families = _counters(engine), _families(engine, kept)
    # When the sweeper prunes
    counts = retention.prune(engine, kept)
    # Then the old finished executions are gone, with their attempts, but for the dead one
    # still in the dead-letter queue; the waiting one stays
    left = _ids(engine, "executions")
    assert dead in left and young[0] in left
    assert left.isdisjoint({done[0], cancelled[0], purged, later, by_event})
    with engine.connect() as conn:
        attempts = set(conn.execute(text("SELECT execution_id FROM attempts")).scalars())
    assert attempts <= left
    # And the events whose executions are gone go with their enforcements; the failed stays
    assert _ids(engine, "events") == {failed}
    assert counts["executions_pruned"] == 5 and counts["events_pruned"] == 2
    # And no counter moved: the lines' totals, and every /metrics counter of history
    assert _counters(engine) == counters
    assert _families(engine, kept) == families
    # And a second pass finds nothing
    assert set(retention.prune(engine, kept).values()) == {0}


def test_an_event_stays_while_one_of_its_executions_does(
    engine: Engine, kept: config.Settings, pack: str
) -> None:
    with db.unit_of_work(engine) as session:
        event_id = events.store(session, "tick", {})
    with db.unit_of_work(engine) as session:
        events.process(session, kept, event_id)
    _old(engine, "events", "received_at", [event_id], 2 * HOUR)
    # Its execution still runs: the event stays
    assert retention.prune(engine, kept)["events_pruned"] == 0
    with engine.connect() as conn:
        execution_id = conn.execute(
            text("SELECT execution_id FROM enforcements WHERE event_id = :e"), {"e": event_id}
        ).scalar_one()
    finish(engine, kept, execution_id)
    # Finished, but not that long ago: both stay
    assert set(retention.prune(engine, kept).values()) == {0}
    _old(engine, "execution_state", "finished_at", [execution_id], 2 * HOUR)
    # Old too: the execution goes, then its event, in one pass
    counts = retention.prune(engine, kept)
    assert (counts["executions_pruned"], counts["events_pruned"]) == (1, 1)


def test_a_refusal_still_counts_once_its_event_is_gone(
    engine: Engine, kept: config.Settings, pack: str
) -> None:
    # Given a full line (one granted, two waiting): the rule's enqueue is refused
    submit(engine, kept, None, f"{pack}.job", [{}, {}, {}])
    with db.unit_of_work(engine) as session:
        event_id = events.store(session, "tick", {})
    with db.unit_of_work(engine) as session:
        events.process(session, kept, event_id)
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM enforcements")).scalar_one()
    assert status == "rejected"
    before = _families(engine, kept)
    assert sum(before["usher_requests_rejected_total"].values()) == 1
    # When its event is old enough to go
    _old(engine, "events", "received_at", [event_id], 2 * HOUR)
    assert retention.prune(engine, kept)["events_pruned"] == 1
    # Then the refusal, the enforcement and the event are still counted once each
    assert _ids(engine, "events") == set()
    assert _families(engine, kept) == before


def test_pruning_goes_in_batches_within_its_budget(
    engine: Engine, kept: config.Settings, pack: str
) -> None:
    # Given 2,500 old finished executions (made in one statement: their number is the point)
    # on the action's line
    submit(engine, kept, None, f"{pack}.job", [{}])
    with engine.begin() as conn:
        conn.execute(
            text("""WITH made AS MATERIALIZED (
                        SELECT nextval('execution_requests_id_seq') AS id, q.action_id,
                               q.id AS queue_id, g
                        FROM queues q CROSS JOIN generate_series(1, 2500) g
                    ), requests AS (
                        INSERT INTO execution_requests (id, action_id, queue_id, seq,
                                                        parameters, enqueued_at)
                        SELECT id, action_id, queue_id, 1000 + g, '{}',
                               now() - interval '3 hours'
                        FROM made
                    )
                    INSERT INTO execution_state (id, queue_id, status, priority, seq, attempt,
                                                 finished_at)
                    SELECT id, queue_id, 'succeeded', 0, 1000 + g, 1, now() - interval '2 hours'
                    FROM made"""),
        )
    # A spent budget prunes nothing; one sweep's budget takes them in batches of 1,000
    assert retention.prune(engine, kept, budget_s=0)["executions_pruned"] == 0
    assert retention.prune(engine, kept)["executions_pruned"] == 2500
    assert len(_ids(engine, "executions")) == 1  # the one that was not finished


def test_the_audit_keeps_its_own_span(engine: Engine, kept: config.Settings) -> None:
    from app import audit

    for n in range(3):
        audit.record_now(engine, "someone", "verb", str(n), "ok")
    ids = sorted(_ids(engine, "audit"))
    _old(engine, "audit", "at", ids[:1], 3 * HOUR)  # past the audit's 2 h
    _old(engine, "audit", "at", ids[1:2], 90 * 60)  # past the history's 1 h only
    assert retention.prune(engine, kept)["audit_pruned"] == 1
    assert sorted(_ids(engine, "audit")) == ids[1:]


def test_the_sweeper_prunes_and_every_history_table_is_covered(
    engine: Engine, celery_app: Any
) -> None:
    from tasks import sweeper

    counts = sweeper.sweep()
    assert {f"{s.name}_pruned" for s in retention.STEPS} <= set(counts)
    # Each table that grows with use is pruned by a step, goes with one by its foreign key,
    # or is pruned by a rule of its own; every other table holds state of bounded size. A
    # new table must be placed here.
    growing = {
        "execution_requests": "prune_executions",
        "execution_state": "cascade",
        "attempts": "cascade",
        "execution_output": "cascade",
        "events": "prune_events",
        "enforcements": "prune_events",
        "webhook_deliveries": "cascade",
        "schedule_fires": "prune_schedule_fires",
        "audit": "prune_audit",
        "idempotency_keys": "idempotency.prune",
        "queue_samples": "recovery.sample_lines",
        "rate_grants": "policies.ratelimit",
        "web_sessions": "drop_expired_web_sessions",
    }
    bounded = {
        "alembic_version",
        "packs",
        "actions",
        "queues",
        "rules",
        "schedules",
        "webhooks",
        "webhook_requests",
        "api_tokens",
        "levels",
        "action_levels",
        "attempt_totals",
        "history_pruned",
        "installation",
    }
    with engine.connect() as conn:
        tables = set(
            conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            ).scalars()
        )
    assert tables == set(growing) | bounded
    statements = (REPO / "app" / "sql" / "retention.sql").read_text()
    for table, rule in growing.items():
        if rule.startswith("prune_"):
            block = statements.split(f"-- name: {rule}\n", 1)[1].split("-- name:", 1)[0]
            assert f"FROM {table}" in block, table
