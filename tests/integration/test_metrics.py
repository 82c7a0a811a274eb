"""``/metrics`` parsed with prometheus_client's parser equals a recount from Postgres."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text

import web
from app import config, db
from policies import admission
from tests.support import packs
from tests.support.flow import submit

pytestmark = pytest.mark.timeout(120)


def _scrape(settings: config.Settings, celery_app: Any) -> dict[str, dict[tuple, float]]:
    client = web.create_app(settings, celery_app).test_client()
    response = client.get("/metrics")  # open: no token
    assert response.status_code == 200
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        # A family with no samples yet is still served (its HELP and TYPE)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
        for suffix in suffixes.get(family.type, [""]):
            samples.setdefault(family.name + suffix, {})
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
            key = (*labels, ("le", sample.labels["le"])) if "le" in sample.labels else labels
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


def _recount(engine: Engine, sql: str) -> dict[tuple, float]:
    with engine.connect() as conn:
        rows = conn.execute(text(sql)).mappings().all()
    return {
        tuple(sorted((k, str(v)) for k, v in r.items() if k != "n")): float(r["n"]) for r in rows
    }


def test_metrics_equal_a_recount(
    engine: Engine, settings: config.Settings, celery_app: Any, tmp_path: Path
) -> None:
    # Given executions in every state: succeeded, dead, retrying, cancelled, running, queued
    name = packs.load(
        engine,
        tmp_path,
        [
            {
                "name": "a",
                "runner": "noop",
                "policy": {
                    "concurrency": 2,
                    "retry": {"max_retries": 1, "initial_delay_ms": 10, "jitter": False},
                },
            },
            {"name": "b", "runner": "sleep", "policy": {"concurrency": 1}},
        ],
    )
    a_ids = submit(engine, settings, None, f"{name}.a", [{}] * 6)
    submit(engine, settings, None, f"{name}.b", [{}] * 3)
    outcomes = [("succeeded", True), ("failed", False), ("failed", True), ("timed_out", True)]
    for execution_id, (outcome, transient) in zip(a_ids, outcomes, strict=False):
        with db.unit_of_work(engine) as session:
            admission.claim(session, execution_id, 1, "w/1", 15)
        with db.unit_of_work(engine) as session:
            admission.release(
                session,
                settings,
                admission.Ended(execution_id, 1, outcome, error=outcome, transient=transient),
            )
    with db.unit_of_work(engine) as session:
        admission.cancel(session, settings, a_ids[5])
    # When /metrics is scraped
    samples = _scrape(settings, celery_app)
    # Then every family equals its recount from the executions and attempts tables
    by_action = (
        "SELECT a.ref AS action, count(e.id) AS n FROM actions a "
        "LEFT JOIN executions e ON e.action_id = a.id {where} GROUP BY a.ref"
    )
    assert samples["usher_executions_enqueued_total"] == _recount(
        engine, by_action.format(where="")
    )
    for status in ("succeeded", "dead", "cancelled", "expired"):
        got = {
            k: v
            for k, v in samples["usher_executions_finished_total"].items()
            if ("status", status) in k
        }
        want = _recount(engine, by_action.format(where=f"AND e.status = '{status}'"))
        assert got == {(*k, ("status", status)): v for k, v in want.items()}
    assert samples["usher_queue_depth"] == _recount(
        engine, by_action.format(where="AND e.status = 'queued'")
    )
    assert samples["usher_active_executions"] == _recount(
        engine, by_action.format(where="AND e.status IN ('scheduled', 'running')")
    )
    assert samples["usher_execution_failures_total"] == _recount(
        engine,
        """
        SELECT a.ref AS action, t.outcome AS error_type, a.runner, count(*) AS n
        FROM attempts t JOIN executions e ON e.id = t.execution_id
        JOIN actions a ON a.id = e.action_id WHERE t.outcome <> 'succeeded'
        GROUP BY 1, 2, 3""",
    )
    with engine.connect() as conn:
        attempts = conn.execute(text("SELECT count(*) FROM attempts")).scalar_one()
        dead = conn.execute(
            text("SELECT count(*) FROM executions WHERE status = 'dead'")
        ).scalar_one()
    durations = samples["usher_execution_duration_seconds_count"]
    assert sum(durations.values()) == attempts == 4
    assert samples["usher_dlq_items"] == {(): float(dead)} and dead == 1
    assert sum(samples.get("usher_retries_total", {}).values()) == 0  # no attempt 2 ran yet
    inf = samples["usher_execution_duration_seconds_bucket"]
    assert all(v == durations[k[:-1]] for k, v in inf.items() if k[-1] == ("le", "+Inf"))


def test_the_sweeper_samples_each_line_for_the_charts_once_per_interval(
    engine: Engine, settings: config.Settings, celery_app: Any, tmp_path: Path
) -> None:
    from tasks import sweeper

    name = packs.load(
        engine, tmp_path, [{"name": "a", "runner": "noop", "policy": {"concurrency": 1}}]
    )
    submit(engine, settings, None, f"{name}.a", [{}] * 4)
    assert sweeper.sweep()["samples"] == 1
    assert sweeper.sweep()["samples"] == 0  # within SAMPLE_EVERY_S
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT queue_length, active_count, oldest_wait_s FROM queue_samples")
        ).one()
    assert (row.queue_length, row.active_count) == (3, 1) and row.oldest_wait_s >= 0


def test_grafana_and_alerts_use_only_metrics_that_exist(
    engine: Engine, settings: config.Settings, celery_app: Any, tmp_path: Path
) -> None:
    import re

    name = packs.load(engine, tmp_path, [{"name": "a", "runner": "noop"}])
    (execution_id,) = submit(engine, settings, None, f"{name}.a", [{}])
    with db.unit_of_work(engine) as session:
        admission.claim(session, execution_id, 1, "w/1", 15)
    with db.unit_of_work(engine) as session:
        admission.release(
            session, settings, admission.Ended(execution_id, 1, "failed", transient=False)
        )
    served = set(_scrape(settings, celery_app))
    docs = Path(__file__).resolve().parents[2] / "docs"
    used = set(
        re.findall(
            r"usher_[a-z_]+",
            (docs / "alerts.yml").read_text() + (docs / "grafana" / "usher.json").read_text(),
        )
    )
    assert used and used <= served, used - served
