"""The second round of ``/metrics`` families (CONTRACT.md "Metrics, second round") equal a
recount from Postgres, with ``le`` written as prometheus_client writes it."""

from __future__ import annotations

import re
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import Histogram as ClientHistogram
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry
from sqlalchemy import Engine, text

import web
from app import config, db
from tests.integration.test_metrics import _recount, _scrape
from tests.support import packs
from tests.support.flow import submit
from web import metrics

pytestmark = pytest.mark.timeout(120)


def _seed(engine: Engine, name: str) -> None:
    """Events of two triggers, enforcements of each status, a schedule fired twice."""
    with db.unit_of_work(engine) as session:
        pack_id = session.execute(
            text("SELECT id FROM packs WHERE name = :n"), {"n": name}
        ).scalar_one()
        session.execute(
            text(
                "INSERT INTO rules (pack_id, ref, name, trigger, action_ref) "
                "VALUES (:p, :ref, 'r', :t, :a)"
            ),
            {"p": pack_id, "ref": f"{name}.r", "t": f"{name}.t", "a": f"{name}.a"},
        )
        rule_id = session.execute(
            text("SELECT id FROM rules WHERE ref = :ref"), {"ref": f"{name}.r"}
        ).scalar_one()
        for i, (status, reason) in enumerate(
            [
                ("executed", None),
                ("rejected", "QueueFull: the line is full"),
                ("rejected", "QueueFull: the line is full"),
                ("rejected", "ChainTooDeep: step 11"),
                ("skipped", "the rule is disabled"),
            ]
        ):
            event_id = session.execute(
                text("INSERT INTO events (trigger) VALUES (:t) RETURNING id"),
                {"t": f"{name}.t" if i else f"{name}.other"},
            ).scalar_one()
            session.execute(
                text(
                    "INSERT INTO enforcements (event_id, rule_id, rule_ref, status, reason) "
                    "VALUES (:e, :r, :f, :s, :w)"
                ),
                {"e": event_id, "r": rule_id, "f": f"{name}.r", "s": status, "w": reason},
            )
        schedule_id = session.execute(
            text(
                "INSERT INTO schedules (pack_id, ref, name, every_s, trigger) "
                "VALUES (:p, :ref, 's', 60, :t) RETURNING id"
            ),
            {"p": pack_id, "ref": f"{name}.s", "t": f"{name}.t"},
        ).scalar_one()
        session.execute(
            text(
                "INSERT INTO schedule_fires (schedule_id, fire_at) "
                "VALUES (:s, now()), (:s, now() - interval '1 minute')"
            ),
            {"s": schedule_id},
        )
        session.execute(
            text(
                "INSERT INTO webhook_requests (webhook, outcome, count) "
                "VALUES (:w, 'accepted', 3), (:w, 'unauthorized', 2)"
            ),
            {"w": f"{name}.hook"},
        )


def test_second_round_families_equal_a_recount(
    engine: Engine, settings: config.Settings, celery_app: Any, tmp_path: Path
) -> None:
    # Given an action with waiting executions, rules, events, enforcements, a schedule
    name = packs.load(
        engine,
        tmp_path,
        [
            {"name": "a", "runner": "noop", "policy": {"concurrency": 1}},
            {"name": "b", "runner": "noop"},
        ],
    )
    submit(engine, settings, None, f"{name}.a", [{}] * 3)
    _seed(engine, name)
    time.sleep(0.05)
    # When /metrics is scraped
    samples = _scrape(settings, celery_app)
    # Then each family equals its recount, and the new series are there
    action = ("action", f"{name}.a")
    assert samples["usher_build_info"][(("version", metrics._version()),)] == 1
    assert samples["usher_oldest_waiting_seconds"][(action,)] > 0  # two wait behind one
    assert samples["usher_oldest_waiting_seconds"][(("action", f"{name}.b"),)] == 0
    assert samples["usher_concurrency_limit"][(action,)] == 1
    assert samples["usher_concurrency_limit"][(("action", f"{name}.b"),)] == (
        settings.default_max_concurrent
    )
    rejected = samples["usher_requests_rejected_total"]
    assert rejected[(action, ("reason", "QueueFull"))] == 2
    assert rejected[(action, ("reason", "ChainTooDeep"))] == 1
    assert rejected[(("action", ""), ("reason", "webhook_unauthorized"))] >= 2
    assert all(not reason.startswith("webhook_accepted") for (_, (_, reason)) in rejected)
    assert samples["usher_events_total"] == _recount(
        engine, "SELECT trigger, count(*) AS n FROM events GROUP BY trigger"
    )
    assert samples["usher_events_total"][(("trigger", f"{name}.t"),)] == 4
    assert samples["usher_enforcements_total"] == _recount(
        engine, "SELECT rule_ref AS rule, status, count(*) AS n FROM enforcements GROUP BY 1, 2"
    )
    assert samples["usher_enforcements_total"][(("rule", f"{name}.r"), ("status", "rejected"))] == 3
    assert samples["usher_schedule_fires_total"][(("schedule", f"{name}.s"),)] == 2


def test_le_labels_are_written_as_prometheus_client_writes_them() -> None:
    # Given the same buckets observed by prometheus_client and by our writer
    registry = CollectorRegistry()
    theirs = ClientHistogram("h", "h", buckets=metrics.DURATION_BUCKETS, registry=registry)
    theirs.observe(0.3)
    ours = metrics.Histogram(metrics.DURATION_BUCKETS)
    ours.add_bucket(5, 1, Decimal("0.3"))
    out = metrics.Text()
    out.histogram("h", "", "", ours)
    # Then the le values are the same strings ("1.0", "2.5", "+Inf")
    pattern = re.compile(r'le="([^"]+)"')
    want = pattern.findall(generate_latest(registry).decode())
    assert pattern.findall(out.encoded().decode()) == want
    assert "1.0" in want and "+Inf" in want


def test_the_cache_renders_once_per_period_for_many_threads() -> None:
    # Given a cache of 0.5 s over a slow rendering
    calls: list[float] = []

    def render() -> bytes:
        calls.append(time.monotonic())
        time.sleep(0.05)
        return str(len(calls)).encode()

    cache = metrics.Cache(render, 0.5)
    # When 20 threads scrape at once
    answers: list[bytes] = []
    threads = [threading.Thread(target=lambda: answers.append(cache.get())) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then one rendering served them all; after the period, one more
    assert len(calls) == 1 and set(answers) == {b"1"}
    time.sleep(0.5)
    assert cache.get() == b"2" and len(calls) == 2


def test_metrics_are_served_from_the_cache(
    settings: config.Settings, celery_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = metrics.render
    monkeypatch.setattr(metrics, "render", lambda *a: calls.append(1) or real(*a))
    client = web.create_app(settings.model_copy(update={"metrics_cache_s": 60.0}), celery_app)
    test_client = client.test_client()
    first = test_client.get("/metrics").data
    assert test_client.get("/metrics").data == first and len(calls) == 1
