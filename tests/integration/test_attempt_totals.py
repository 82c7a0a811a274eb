"""The attempt totals that /metrics reads (migration 0005) equal a recount of the history.

The recount is the scrape as it was before the totals: grouped straight from ``attempts``.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString
from sqlalchemy import Engine, event, text

import web
from app import config, db, sql
from policies import admission
from tests.support import packs
from tests.support.flow import submit
from web import metrics

pytestmark = pytest.mark.timeout(120)

MIGRATION = Path(__file__).resolve().parents[2] / "migrations/versions/0005_web_scale_indexes.py"
HISTORY = """
    SELECT a.ref AS action, a.runner, t.outcome, t.attempt,
           extract(epoch FROM t.finished_at - t.started_at) AS run,
           extract(epoch FROM t.started_at - t.queued_at) AS wait
    FROM attempts t JOIN executions e ON e.id = t.execution_id JOIN actions a ON a.id = e.action_id
"""
RUNNING = """
    SELECT a.ref AS action, extract(epoch FROM e.started_at - e.queued_at) AS wait
    FROM executions e JOIN actions a ON a.id = e.action_id
    WHERE e.status = 'running' AND e.queued_at IS NOT NULL
"""


def _scrape(settings: config.Settings, celery_app: Any) -> dict[tuple[Any, ...], float]:
    body = web.create_app(settings, celery_app).test_client().get("/metrics")
    assert body.status_code == 200
    wanted = ("usher_execution_failures", "usher_retries", "usher_execution_duration")
    found: dict[tuple[Any, ...], float] = {}
    for family in text_string_to_metric_families(body.get_data(as_text=True)):
        if family.name.startswith((*wanted, "usher_queue_wait")):
            for s in family.samples:
                found[(s.name, *sorted(s.labels.items()))] = s.value
    return found


def _histogram(
    name: str, labels: dict[str, str], values: list[Any], bounds: tuple[float, ...]
) -> dict[tuple[Any, ...], float]:
    seen = [v for v in values if v is not None]
    out = {
        # The bound as prometheus_client writes it ("1.0", not "1"), as /metrics does
        (f"{name}_bucket", *sorted({**labels, "le": floatToGoString(b)}.items())): float(
            sum(1 for v in seen if v <= b)
        )
        for b in bounds
    }
    out[(f"{name}_bucket", *sorted({**labels, "le": "+Inf"}.items()))] = float(len(values))
    out[(f"{name}_count", *sorted(labels.items()))] = float(len(values))
    out[(f"{name}_sum", *sorted(labels.items()))] = float(sum(seen))
    return out


def _recount(engine: Engine) -> dict[tuple[Any, ...], float]:
    """What the scrape showed when it grouped the whole history at every call."""
    with engine.connect() as conn:
        history = conn.execute(text(HISTORY)).all()
        running = conn.execute(text(RUNNING)).all()
    found: dict[tuple[Any, ...], float] = {}
    for r in history:
        if r.outcome != "succeeded":
            labels = (("action", r.action), ("error_type", r.outcome), ("runner", r.runner))
            key = ("usher_execution_failures_total", *labels)
            found[key] = found.get(key, 0) + 1
        if r.attempt > 1:
            key = ("usher_retries_total", ("action", r.action), ("runner", r.runner))
            found[key] = found.get(key, 0) + 1
    by_run: dict[tuple[str, str], list[Any]] = {}
    by_wait: dict[str, list[Any]] = {}
    for r in history:
        if r.run is not None:
            by_run.setdefault((r.action, r.runner), []).append(r.run)
        if r.wait is not None:
            by_wait.setdefault(r.action, []).append(r.wait)
    for r in running:
        by_wait.setdefault(r.action, []).append(r.wait)
    for (action, runner), values in by_run.items():
        labels = {"action": action, "runner": runner}
        found.update(
            _histogram("usher_execution_duration_seconds", labels, values, metrics.DURATION_BUCKETS)
        )
    for action, values in by_wait.items():
        found.update(
            _histogram("usher_queue_wait_seconds", {"action": action}, values, metrics.WAIT_BUCKETS)
        )
    return found


def _totals(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT * FROM attempt_totals ORDER BY 1, 2"))]


def _rebuilt(engine: Engine) -> list[tuple[Any, ...]]:
    kept = _totals(engine)
    with engine.begin() as conn:
        conn.execute(text("SELECT usher_attempt_totals_rebuild()"))
    rebuilt = _totals(engine)
    assert rebuilt == kept or [r for r in kept if r[2]] == rebuilt  # zero rows may stay
    return rebuilt


def test_the_histogram_bounds_are_the_migrations() -> None:
    spec = importlib.util.spec_from_file_location("m0006", MIGRATION)
    assert spec and spec.loader
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert migration.RUN_BOUNDS == metrics.DURATION_BUCKETS
    assert migration.WAIT_BOUNDS == metrics.WAIT_BUCKETS
    # and the current functions (app/sql/functions.sql), which migration 0008 loads
    add = sql.functions().split("FUNCTION usher_attempt_totals_add", 1)[1].split("$$;", 1)[0]
    bounds = {
        name: tuple(float(b) for b in values.split(", "))
        for name, values in re.findall(r"(run|wait), ARRAY\[([^\]]*)\]::numeric\[\]", add)
    }
    assert bounds == {"run": metrics.DURATION_BUCKETS, "wait": metrics.WAIT_BUCKETS}


def test_totals_follow_inserts_updates_deletes_and_equal_a_recount(
    engine: Engine, settings: config.Settings, celery_app: Any, tmp_path: Path
) -> None:
    # Given releases of every outcome, one still running, and attempts whose run time and
    # wait sit exactly on bucket bounds (v <= bound counts in that bucket)
    name = packs.load(
        engine,
        tmp_path,
        [
            {
                "name": "a",
                "runner": "noop",
                "policy": {
                    "concurrency": 3,
                    "partition_by": ["host"],
                    "retry": {"max_retries": 1, "initial_delay_ms": 10, "jitter": False},
                },
            },
            {"name": "b", "runner": "sleep", "policy": {"concurrency": 1}},
        ],
    )
    ids = submit(engine, settings, None, f"{name}.a", [{"host": h} for h in "xyxyx"])
    (b_id,) = submit(engine, settings, None, f"{name}.b", [{}])
    outcomes = [("succeeded", True), ("failed", False), ("failed", True), ("timed_out", True)]
    for execution_id, (outcome, transient) in zip(ids, outcomes, strict=False):
        with db.unit_of_work(engine) as session:
            assert admission.claim(session, execution_id, 1, "w/1", 15)
        with db.unit_of_work(engine) as session:
            admission.release(
                session,
                settings,
                admission.Ended(execution_id, 1, outcome, error=outcome, transient=transient),
            )
    with db.unit_of_work(engine) as session:
        assert admission.claim(session, b_id, 1, "w/1", 15)  # running: its wait counts live
    with engine.begin() as conn:
        conn.execute(
            text("""
                INSERT INTO attempts (execution_id, attempt, outcome, queued_at, scheduled_at,
                                      started_at, finished_at, worker)
                SELECT :id, 10 + k, (ARRAY['succeeded', 'worker_lost'])[k % 2 + 1],
                       s - make_interval(secs => w), s, s, s + make_interval(secs => r), 'w/2'
                FROM (VALUES (0, 0.01, 0.005), (1, 3600, 3600), (2, 3600.5, 0),
                             (3, 0.05, 0.0051)) AS v(k, r, w),
                     LATERAL (SELECT now() AS s) t
                UNION ALL
                SELECT :id, 20, 'worker_lost', NULL, NULL, NULL, now(), 'w/3'
            """),
            {"id": ids[0]},
        )
    # Then the scrape equals the recount, and the kept totals equal a rebuild from scratch
    scraped = _scrape(settings, celery_app)
    assert scraped == _recount(engine)
    on_bound = ("le", "0.01"), ("action", f"{name}.a"), ("runner", "noop")
    assert scraped[("usher_execution_duration_seconds_bucket", *sorted(on_bound))] >= 1
    _rebuilt(engine)
    # When attempts are changed and deleted (their line stays theirs), then the same holds
    with engine.begin() as conn:
        conn.execute(
            text("""UPDATE attempts SET outcome = 'failed', attempt = attempt + 100,
                        finished_at = finished_at + interval '2 seconds'
                    WHERE execution_id = :id AND attempt IN (11, 12)"""),
            {"id": ids[0]},
        )
        conn.execute(text("DELETE FROM attempts WHERE execution_id = :id"), {"id": ids[1]})
    assert _scrape(settings, celery_app) == _recount(engine)
    _rebuilt(engine)
    with engine.connect() as conn:
        lines = conn.execute(
            text("""SELECT count(*) FROM attempts t JOIN executions e ON e.id = t.execution_id
                    WHERE t.queue_id <> e.queue_id""")
        ).scalar_one()
    assert lines == 0
    # And a truncated history has no totals
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE attempts"))
    assert _totals(engine) == []


def test_a_scrape_reads_no_history(
    engine: Engine, settings: config.Settings, celery_app: Any, tmp_path: Path
) -> None:
    name = packs.load(engine, tmp_path, [{"name": "a", "runner": "noop"}])
    (execution_id,) = submit(engine, settings, None, f"{name}.a", [{}])
    with db.unit_of_work(engine) as session:
        admission.claim(session, execution_id, 1, "w/1", 15)
    with db.unit_of_work(engine) as session:
        admission.release(session, settings, admission.Ended(execution_id, 1, "succeeded"))
    app = web.create_app(settings, celery_app)
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(app.config["USHER_ENGINE"], "before_cursor_execute", record)
    try:
        assert app.test_client().get("/metrics").status_code == 200
    finally:
        event.remove(app.config["USHER_ENGINE"], "before_cursor_execute", record)
    history = re.compile(r"\b(FROM|JOIN)\s+attempts\b")
    assert seen and not any(history.search(sql) for sql in seen)
