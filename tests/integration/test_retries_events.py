"""Retries, the dead-letter queue and events -> rules -> executions, with real workers."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from app import celery as usher_celery
from app import config, db
from policies import dlq, events
from tests.support import invariants, packs
from tests.support.flow import status, statuses, submit, wait_final, wait_until
from tests.support.schemas import declaring
from tests.support.webhook import Script, serve
from tests.support.workers import Pool

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]

FLAKY = "tests.integration.actions:flaky"
FLAKY_SCHEMA = declaring("key", "directory", "fail_times", "permanent")


def _attempts(engine: Engine, execution_id: int) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("SELECT * FROM attempts WHERE execution_id = :i ORDER BY attempt"),
                {"i": execution_id},
            ).all()
        )


def _webhook_action(url: str, **retry_policy: Any) -> dict[str, Any]:
    return {
        "name": "notify",
        "runner": "http",
        "runner_config": {
            "url": url,
            "body": {"host": "{{ parameters.host }}", "n": "{{ parameters.n }}"},
        },
        "timeout_s": 20,
        "parameters": {"type": "object", "properties": {"host": {"type": "string"}, "n": {}}},
        "policy": {"concurrency": 2, "retry": retry_policy},
    }


def test_a_webhook_failing_503_twice_succeeds_on_attempt_three_with_linear_backoff(
    engine: Engine,
    settings: config.Settings,
    celery_app: object,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    script = Script(statuses=[503, 503, 200])
    with serve(script) as url:
        ref = (
            packs.load(
                engine,
                tmp_path,
                [
                    _webhook_action(
                        f"{url}/hook",
                        max_retries=3,
                        strategy="linear",
                        initial_delay_ms=700,
                        jitter=False,
                    )
                ],
            )
            + ".notify"
        )
        worker_pool.start(concurrency=2)
        (execution_id,) = submit(engine, settings, celery_app, ref, [{"host": "db1", "n": 7}])
        wait_final(engine, [ref], timeout=60)
    assert status(engine, execution_id) == "succeeded"
    tries = _attempts(engine, execution_id)
    assert [t.outcome for t in tries] == ["failed", "failed", "succeeded"]
    assert "503" in (tries[0].error or "")
    assert "400" not in (tries[0].error or "")
    # Gaps follow linear backoff: 0.7 s after the first failure, 1.4 s after the second,
    # never earlier, and late by no more than scheduling (broker delivery, a wake-up).
    for number, (before, after) in enumerate(itertools.pairwise(tries), start=1):
        gap = (after.started_at - before.finished_at).total_seconds()
        assert 0.7 * number <= gap <= 0.7 * number + 2.5, (number, gap)
    assert [json.loads(r["body"]) for r in script.received] == [{"host": "db1", "n": 7}] * 3
    invariants.check_line(engine, ref, limit=2)


def test_a_400_is_dead_at_once_and_a_replay_after_the_fix_succeeds(
    engine: Engine,
    settings: config.Settings,
    celery_app: object,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    script = Script(statuses=[400])
    with serve(script) as url:
        ref = packs.load(engine, tmp_path, [_webhook_action(url, max_retries=5)]) + ".notify"
        worker_pool.start(concurrency=1)
        (dead_id,) = submit(engine, settings, celery_app, ref, [{"host": "web1", "n": 1}])
        wait_final(engine, [ref], timeout=30)
        assert status(engine, dead_id) == "dead"
        assert [t.outcome for t in _attempts(engine, dead_id)] == ["failed"]
        with db.unit_of_work(engine) as session:
            assert [i["id"] for i in dlq.items(session)] == [dead_id]
        # When the receiver is fixed and the dead execution replayed
        script.statuses = [200]
        with db.unit_of_work(engine) as session:
            replayed = dlq.replay(session, settings, dead_id)
        usher_celery.publish(celery_app, replayed.grants)  # type: ignore[arg-type]
        wait_final(engine, [ref], timeout=30)
    assert status(engine, replayed.execution_id) == "succeeded"
    with engine.connect() as conn:
        replay_of = conn.execute(
            text("SELECT replay_of FROM executions WHERE id = :i"),
            {"i": replayed.execution_id},
        ).scalar_one()
    assert replay_of == dead_id
    with db.unit_of_work(engine) as session:
        assert dlq.count(session) == 0
    assert len(script.received) == 2
    invariants.check_line(engine, ref, limit=2)


def test_retries_and_dead_letters_keep_the_core_invariants(
    engine: Engine,
    settings: config.Settings,
    celery_app: object,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    # Given a line with limit 3 where most executions fail transiently a few times and some
    # fail for good
    ref = (
        packs.load(
            engine,
            tmp_path,
            [
                {
                    "name": "flaky",
                    "runner": "python",
                    "runner_config": {"entry_point": FLAKY},
                    "parameters": FLAKY_SCHEMA,
                    "policy": {
                        "concurrency": 3,
                        "retry": {
                            "max_retries": 2,
                            "strategy": "exponential",
                            "initial_delay_ms": 50,
                            "max_delay_ms": 400,
                            "jitter": True,
                        },
                    },
                }
            ],
        )
        + ".flaky"
    )
    rng = random.Random(11)
    plans = [
        {
            "key": f"k{i}",
            "directory": str(tmp_path),
            "fail_times": rng.choice([0, 0, 1, 2, 3]),
            "permanent": rng.random() < 0.1,
        }
        for i in range(80)
    ]
    worker_pool.start(concurrency=2)
    worker_pool.start(concurrency=2)
    ids = submit(engine, settings, celery_app, ref, plans)
    wait_final(engine, [ref], timeout=180)
    # Then every execution ends as its plan says, and the invariants hold over all attempts
    expected = {
        i: "succeeded"
        if p["fail_times"] == 0 or (not p["permanent"] and p["fail_times"] <= 2)
        else "dead"
        for i, p in zip(ids, plans, strict=True)
    }
    assert {i: status(engine, i) for i in ids} == expected
    for i, plan in zip(ids, plans, strict=True):
        tries = len(_attempts(engine, i))
        wanted = 1 if plan["permanent"] and plan["fail_times"] else min(plan["fail_times"], 2) + 1
        assert tries == wanted, (plan, tries)
    invariants.check_line(engine, ref, limit=3)


def test_hold_slot_keeps_a_limit_one_line_in_strict_order_through_failures(
    engine: Engine,
    settings: config.Settings,
    celery_app: object,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    ref = (
        packs.load(
            engine,
            tmp_path,
            [
                {
                    "name": "ordered",
                    "runner": "python",
                    "runner_config": {"entry_point": FLAKY},
                    "parameters": FLAKY_SCHEMA,
                    "policy": {
                        "concurrency": 1,
                        "retry": {
                            "max_retries": 3,
                            "strategy": "fixed",
                            "initial_delay_ms": 200,
                            "jitter": False,
                            "hold_slot": True,
                        },
                    },
                }
            ],
        )
        + ".ordered"
    )
    worker_pool.start(concurrency=2)
    plans = [{"key": f"e{i}", "directory": str(tmp_path), "fail_times": i % 3} for i in range(9)]
    submit(engine, settings, celery_app, ref, plans)
    wait_final(engine, [ref], timeout=120)
    assert statuses(engine, ref) == {"succeeded": 9}
    with engine.connect() as conn:
        runs = conn.execute(
            text(
                "SELECT e.seq, t.attempt, t.started_at, t.finished_at FROM attempts t "
                "JOIN executions e ON e.id = t.execution_id ORDER BY t.started_at"
            )
        ).all()
    # Every attempt of execution n ran before any attempt of execution n + 1
    assert [r.seq for r in runs] == sorted(r.seq for r in runs)
    invariants.check_line(engine, ref, limit=1)


def _rules_pack(engine: Engine, tmp_path: Path, directory: Path) -> str:
    name = packs.load(
        engine,
        tmp_path,
        [
            {
                "name": "page",
                "runner": "python",
                "runner_config": {"entry_point": FLAKY},
                "parameters": {
                    "type": "object",
                    "required": ["key", "directory", "fail_times"],
                    "properties": {"fail_times": {"type": "integer"}},
                },
                "policy": {"concurrency": 1, "max_queue_length": 1},
            }
        ],
    )
    rules = tmp_path / name / "rules"
    rules.mkdir()
    base = {"trigger": "alert", "action": f"{name}.page"}
    for rule in (
        {
            **base,
            "name": "on_high",
            "criteria": {"payload.severity": {"in": ["high"]}},
            "parameters": {
                "key": "{{ event.payload.host }}",
                "directory": str(directory),
                "fail_times": 0,
            },
        },
        {
            **base,
            "name": "bad_params",
            "criteria": {"payload.host": {"regex": "^db"}},
            "parameters": {
                "key": "x",
                "directory": str(directory),
                "fail_times": "{{ event.payload.host }}",
            },
        },
        {**base, "name": "disabled", "enabled": False, "parameters": {}},
        {**base, "name": "never", "criteria": {"payload.severity": "low"}, "parameters": {}},
    ):
        (rules / f"{rule['name']}.yaml").write_text(json.dumps(rule))
    with db.unit_of_work(engine) as session:
        from policies import packs as app_packs

        app_packs.load(session, tmp_path / name)
    return name


def test_event_to_enforcement_to_execution_to_result(
    engine: Engine,
    settings: config.Settings,
    celery_app: object,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    name = _rules_pack(engine, tmp_path, tmp_path)
    worker_pool.start(concurrency=1)
    with db.unit_of_work(engine) as session:
        event_id = events.store(session, "alert", {"severity": "high", "host": "db7"})
    usher_celery.send_event(celery_app, event_id)  # type: ignore[arg-type]
    with db.unit_of_work(engine) as session:
        wait_until(lambda: events.processed(session, event_id), 30, what="event processed")
    with db.unit_of_work(engine) as session:
        found = {e["rule"]: e for e in events.enforcements(session, event_id)}
    assert set(found) == {f"{name}.on_high", f"{name}.bad_params", f"{name}.disabled"}
    assert found[f"{name}.on_high"]["status"] == "executed"
    assert found[f"{name}.disabled"]["status"] == "skipped"
    rejected = found[f"{name}.bad_params"]
    assert rejected["status"] == "rejected" and "fail_times" in rejected["reason"]
    execution_id = found[f"{name}.on_high"]["execution_id"]
    wait_until(lambda: status(engine, execution_id) == "succeeded", 30, what="the run")
    with engine.connect() as conn:
        params = conn.execute(
            text("SELECT parameters FROM executions WHERE id = :i"), {"i": execution_id}
        ).scalar_one()
    assert params["key"] == "db7"  # rendered from the event
    # Re-processing the same event never enforces twice
    with db.unit_of_work(engine) as session:
        again = events.process(session, settings, event_id)
    assert again.enforcements == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM enforcements")).scalar_one() == 3


def test_a_full_line_rejects_the_enforcement_and_records_why(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    name = _rules_pack(engine, tmp_path, tmp_path)
    # No worker: the first execution holds the slot, the second waits, the third is refused.
    outcomes = []
    for host in ("h1", "h2", "h3"):
        with db.unit_of_work(engine) as session:
            event_id = events.store(session, "alert", {"severity": "high", "host": host})
            processed = events.process(session, settings, event_id)
        outcomes += [
            (e.status, e.reason) for e in processed.enforcements if e.rule.endswith(".on_high")
        ]
    assert [s for s, _ in outcomes] == ["executed", "executed", "rejected"]
    assert "QueueFull" in (outcomes[2][1] or "")
    assert statuses(engine, f"{name}.page") == {"scheduled": 1, "queued": 1}
    assert invariants.counter_mismatches(engine) == []
