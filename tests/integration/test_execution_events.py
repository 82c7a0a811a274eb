"""Execution events: a final status emits one usher.execution event in its own transaction;
rules chain on it; a chain stops at USHER_MAX_CHAIN_DEPTH; with no rule on it, no trigger runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from app import config, db
from policies import admission, events
from policies import packs as app_packs
from tests.support import invariants, packs
from tests.support.flow import status, submit, wait_until
from tests.support.workers import Pool

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]

FLAKY = "tests.integration.actions:flaky"
FLAKY_PARAMETERS = {
    "type": "object",
    "required": ["key", "directory", "fail_times"],
    "properties": {
        "key": {"type": "string"},
        "directory": {"type": "string"},
        "fail_times": {"type": "integer"},
        "permanent": {"type": "boolean"},
    },
}


def _flaky(name: str, concurrency: int = 1) -> dict[str, Any]:
    return {
        "name": name,
        "runner": "python",
        "runner_config": {"entry_point": FLAKY},
        "parameters": FLAKY_PARAMETERS,
        "policy": {"concurrency": concurrency, "retry": {"max_retries": 0}},
    }


def _pack(engine: Engine, tmp_path: Path, rules: list[dict[str, Any]]) -> str:
    name = packs.load(engine, tmp_path, [_flaky("work"), _flaky("notify", 2)])
    _rules(engine, tmp_path / name, rules)
    return name


def _rules(engine: Engine, root: Path, rules: list[dict[str, Any]]) -> None:
    folder = root / "rules"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for rule in rules:
        (folder / f"{rule['name']}.yaml").write_text(json.dumps(rule))
    with db.unit_of_work(engine) as session:
        app_packs.load(session, root)


def _enabled(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(text("SELECT usher_execution_events_enabled()")).scalar_one())


def _execution_events(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("""SELECT id, payload, depth, processed_at FROM events
                        WHERE trigger = 'usher.execution' ORDER BY id""")
            ).all()
        )


def _executions(engine: Engine, ref: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("""SELECT e.id, e.status, e.parameters FROM executions e
                        JOIN actions a ON a.id = e.action_id WHERE a.ref = :r ORDER BY e.id"""),
                {"r": ref},
            ).all()
        )


def test_a_dead_execution_notifies_through_a_rule_on_usher_execution(
    engine: Engine,
    settings: config.Settings,
    celery_app: object,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    # Given a rule that runs notify with the id of every execution of work that ends dead
    name = _pack(engine, tmp_path, [])
    _rules(
        engine,
        tmp_path / name,
        [
            {
                "name": "on_dead",
                "trigger": "usher.execution",
                "criteria": {
                    "payload.status": {"eq": "dead"},
                    "payload.action": {"eq": f"{name}.work"},
                },
                "action": f"{name}.notify",
                "parameters": {
                    "key": "n{{ event.payload.execution_id }}",
                    "directory": str(tmp_path),
                    "fail_times": 0,
                },
            }
        ],
    )
    assert _enabled(engine)
    worker_pool.start(concurrency=2)
    # When one run of work dies (a permanent failure) and two succeed
    jobs = [
        {"key": "ok1", "directory": str(tmp_path), "fail_times": 0},
        {"key": "bad", "directory": str(tmp_path), "fail_times": 9, "permanent": True},
        {"key": "ok2", "directory": str(tmp_path), "fail_times": 0},
    ]
    ok1, dead, ok2 = submit(engine, settings, celery_app, f"{name}.work", jobs)
    wait_until(lambda: len(_executions(engine, f"{name}.notify")) == 1, 60, what="the notifier")
    (notify,) = _executions(engine, f"{name}.notify")
    wait_until(lambda: status(engine, notify.id) == "succeeded", 60, what="the notification")
    # Then notify ran once, with the dead execution's id
    assert status(engine, dead) == "dead"
    assert notify.parameters["key"] == f"n{dead}"
    # And every final status made exactly one event, in order of the ends, all processed
    wait_until(
        lambda: (
            len(_execution_events(engine)) == 4
            and all(e.processed_at for e in _execution_events(engine))
        ),
        30,
        what="four processed execution events",
    )
    found = _execution_events(engine)
    assert sorted(e.payload["execution_id"] for e in found) == sorted([ok1, dead, ok2, notify.id])
    by_id = {e.payload["execution_id"]: e for e in found}
    assert by_id[dead].payload["status"] == "dead"
    assert by_id[dead].payload["action"] == f"{name}.work"
    assert by_id[dead].payload["attempt"] == 1
    assert "permanent" in by_id[dead].payload["error"]
    assert by_id[dead].payload["parameters"]["key"] == "bad"
    assert by_id[dead].depth == 1
    # The notifier's own end is one step deeper, and names the rule and event that made it
    assert by_id[notify.id].depth == 2
    assert by_id[notify.id].payload["rule"] == f"{name}.on_dead"
    assert by_id[notify.id].payload["event_id"] == by_id[dead].id
    assert by_id[ok1].payload["result"] == {"calls": 1}
    # An event matched by no rule is processed with no enforcement
    with db.unit_of_work(engine) as session:
        assert events.enforcements(session, by_id[ok1].id) == []
    invariants.check_line(engine, f"{name}.work", 1)
    invariants.check_line(engine, f"{name}.notify", 2)


@pytest.mark.processes  # its own worker pool, not the fixture
def test_a_rule_that_retriggers_its_own_action_stops_at_the_depth_limit(
    engine: Engine,
    settings: config.Settings,
    celery_app: object,
    tmp_path: Path,
) -> None:
    shallow = settings.model_copy(update={"max_chain_depth": 3})
    pool = Pool(shallow, tmp_path / "logs")
    name = _pack(engine, tmp_path, [])
    _rules(
        engine,
        tmp_path / name,
        [
            {
                "name": "again",
                "trigger": "usher.execution",
                "criteria": {"payload.action": {"eq": f"{name}.work"}},
                "action": f"{name}.work",
                "parameters": {
                    "key": "loop{{ event.payload.execution_id }}",
                    "directory": str(tmp_path),
                    "fail_times": 0,
                },
            }
        ],
    )
    try:
        pool.start(concurrency=1)
        submit(
            engine,
            settings,
            celery_app,
            f"{name}.work",
            [{"key": "first", "directory": str(tmp_path), "fail_times": 0}],
        )

        def refused() -> list[Any]:
            with engine.connect() as conn:
                return list(
                    conn.execute(
                        text("""SELECT en.reason, ev.depth FROM enforcements en
                                JOIN events ev ON ev.id = en.event_id
                                WHERE en.status = 'rejected'""")
                    ).all()
                )

        wait_until(lambda: refused() != [], 90, what="the enforcement past the depth")
    finally:
        pool.stop_all()
    # Then the first run and three chained runs ran, and the fourth step was refused
    runs = _executions(engine, f"{name}.work")
    assert [r.status for r in runs] == ["succeeded"] * 4
    ((reason, depth),) = refused()
    assert depth == 4
    assert "USHER_MAX_CHAIN_DEPTH (3)" in reason and "step 4" in reason
    assert [e.depth for e in _execution_events(engine)] == [1, 2, 3, 4]


def test_with_no_rule_listening_no_trigger_runs_and_a_cancel_emits_in_its_transaction(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # Given a pack with no rule on usher.execution: the trigger is off and an end makes nothing
    name = _pack(engine, tmp_path, [])
    assert not _enabled(engine)
    job = {"key": "a", "directory": str(tmp_path), "fail_times": 0}
    first, waiting = submit(engine, settings, None, f"{name}.work", [job, job])
    with db.unit_of_work(engine) as session:
        assert admission.cancel(session, settings, waiting).events == ()
    assert _execution_events(engine) == []
    # When a rule listens (disabled rules do not count), the trigger is on
    listening = {
        "name": "watch",
        "trigger": "usher.execution",
        "action": f"{name}.notify",
        "parameters": {"key": "w", "directory": str(tmp_path), "fail_times": 0},
    }
    _rules(engine, tmp_path / name, [{**listening, "enabled": False}])
    assert not _enabled(engine)
    _rules(engine, tmp_path / name, [listening])
    assert _enabled(engine)
    # Then a cancel emits its event in the cancel's own transaction: rolled back, none
    with pytest.raises(RuntimeError), db.unit_of_work(engine) as session:
        assert len(admission.cancel(session, settings, first).events) == 1
        raise RuntimeError("roll back")
    assert _execution_events(engine) == []
    with db.unit_of_work(engine) as session:
        cancelled = admission.cancel(session, settings, first)
    (event,) = _execution_events(engine)
    assert cancelled.events == (event.id,)
    assert event.payload["status"] == "cancelled" and event.payload["execution_id"] == first
    assert event.depth == 1 and event.payload["rule"] is None
    # The last rule gone: the trigger is off again
    _rules(engine, tmp_path / name, [])
    assert not _enabled(engine)


DEMO = Path(__file__).resolve().parents[2] / "examples" / "packs" / "demo"


def test_the_demo_notifies_a_dead_order_and_not_its_own_notifier(
    engine: Engine, settings: config.Settings
) -> None:
    # Given the demo pack, whose rule notify_on_dead listens on usher.execution
    with db.unit_of_work(engine) as session:
        app_packs.load(session, DEMO)
    (order,) = submit(
        engine, settings, None, "demo.validate_order", [{"order_id": 7, "amount": -1}]
    )
    # When the order ends dead (a permanent failure of its first attempt, no worker needed)
    with db.unit_of_work(engine) as session:
        assert admission.claim(session, order, 1, "test-worker", 30) is not None
    with db.unit_of_work(engine) as session:
        ended = admission.Ended(order, 1, "failed", error="negative amount", transient=False)
        released = admission.release(session, settings, ended)
    assert released.status == "dead"
    (emitted,) = released.events
    # Then its event enforces the notifier with the dead execution's id, action and error
    with db.unit_of_work(engine) as session:
        (enforced,) = events.process(session, settings, emitted).enforcements
    assert enforced.rule == "demo.notify_on_dead" and enforced.status == "executed"
    (notify,) = _executions(engine, "demo.notify")
    assert notify.parameters == {
        "execution_id": order,
        "action": "demo.validate_order",
        "error": "negative amount",
    }
    # And the notifier's own dead end notifies nobody (the criteria leave it out)
    with db.unit_of_work(engine) as session:
        admission.claim(session, notify.id, 1, "test-worker", 30)
    with db.unit_of_work(engine) as session:
        ended = admission.Ended(notify.id, 1, "failed", error="sink down", transient=False)
        (again,) = admission.release(session, settings, ended).events
    with db.unit_of_work(engine) as session:
        assert events.process(session, settings, again).enforcements == []


def test_every_final_status_emits() -> None:
    from importlib import import_module

    from app.statuses import FINISHED

    migration = import_module("migrations.versions.0013_execution_events")
    assert migration.FINAL == "(" + ", ".join(f"'{s}'" for s in FINISHED) + ")"
