"""Hostile event payloads against real worker processes: no shell sees them, no regex hangs on
them, no secret leaks through what they cause, and a poison event ends instead of looping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from app import celery as usher_celery
from app import config, db
from policies import events, recovery
from tests.support import packs
from tests.support.flow import status, submit, wait_until
from tests.support.schemas import declaring
from tests.support.workers import Pool, tear_down

# Not marked broker: its subject is what a payload can reach, so the Redis pass leaves it out.
pytestmark = [pytest.mark.timeout(240), pytest.mark.processes]

SECRET = "hostile-test-secret-value-7731"


@pytest.fixture
def hostile_settings(settings: config.Settings, tmp_path: Path) -> config.Settings:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "SHELL_TOKEN").write_text(SECRET + "\n")
    return settings.model_copy(update={"secrets_dir": secrets_dir, "event_max_failures": 2})


@pytest.fixture
def pool(hostile_settings: config.Settings, tmp_path: Path) -> Any:
    pool = Pool(hostile_settings, tmp_path / "logs")
    yield pool
    tear_down(pool)


def _rules(root: Path, rules: list[dict[str, Any]]) -> None:
    (root / "rules").mkdir(exist_ok=True)
    for rule in rules:
        (root / "rules" / f"{rule['name']}.yaml").write_text(json.dumps(rule))


def _load(engine: Engine, tmp_path: Path, actions: list[dict[str, Any]], rules: Any) -> str:
    name = packs.load(engine, tmp_path, actions)
    for rule in rules(name):
        rule.setdefault("parameters", {})
    _rules(tmp_path / name, rules(name))
    with db.unit_of_work(engine) as session:
        from policies import packs as app_packs

        app_packs.load(session, tmp_path / name)
    return name


def _send(engine: Engine, app: Any, trigger: str, payload: Any) -> int:
    with db.unit_of_work(engine) as session:
        event_id = events.store(session, trigger, payload)
    usher_celery.send_event(app, event_id)
    return event_id


def _enforced(engine: Engine, event_id: int) -> list[dict[str, Any]]:
    with db.unit_of_work(engine) as session:
        wait_until(lambda: events.processed(session, event_id), 60, what="event processed")
        return events.enforcements(session, event_id)


def test_a_payload_with_shell_syntax_runs_nothing_and_leaks_no_secret(
    engine: Engine,
    hostile_settings: config.Settings,
    celery_app: Any,
    pool: Pool,
    tmp_path: Path,
) -> None:
    # Given a shell action fed by a rule from the event's payload, holding a secret in its env
    marker = tmp_path / "owned"
    action = {
        "name": "greet",
        "runner": "shell",
        "runner_config": {
            "command": [
                "/bin/sh",
                "-c",
                'echo "hi $1 token=$TOKEN"; exit 3',
                "sh",
                "{{ parameters.msg }}",
            ],
            "env": {"TOKEN": "{{ secrets.SHELL_TOKEN }}"},
        },
        "parameters": declaring("msg"),
        "policy": {"retry": {"max_retries": 0}},
    }
    name = _load(
        engine,
        tmp_path,
        [action],
        lambda n: [
            {
                "name": "on_alert",
                "trigger": f"{n}.alert",
                "action": f"{n}.greet",
                "parameters": {"msg": "{{ event.payload.host }}"},
            }
        ],
    )
    worker = pool.start(concurrency=1)
    # When a payload carries backticks, $(...) and ; into that parameter
    hostile = f"db1`touch {marker}`; touch {marker}; $(touch {marker})"
    event_id = _send(engine, celery_app, f"{name}.alert", {"host": hostile})
    (enforcement,) = _enforced(engine, event_id)
    execution_id = enforcement["execution_id"]
    wait_until(lambda: status(engine, execution_id) == "dead", 60, what="the run")
    # Then the shell printed the value as data and ran nothing from it
    assert not marker.exists()
    with engine.connect() as conn:
        result, error = conn.execute(
            text("SELECT result, error FROM executions WHERE id = :i"), {"i": execution_id}
        ).one()
    assert result["stdout"] == f"hi {hostile} token=***\n"
    # And the secret it used is nowhere: not in Postgres, not in the API, not in the log
    with engine.connect() as conn:
        rows = []
        for table in ("executions", "attempts", "events", "enforcements", "actions"):
            query = text(f"SELECT row_to_json(t)::text FROM {table} t")
            rows += list(conn.execute(query).scalars())
    dump = "\n".join(rows)
    assert SECRET not in dump and "{{ secrets.SHELL_TOKEN }}" in dump
    import web

    client = web.create_app(
        hostile_settings.model_copy(update={"api_token": "hostile-admin-token"}), celery_app
    ).test_client()
    answer = client.get(
        f"/api/v1/executions/{execution_id}",
        headers={"Authorization": "Bearer hostile-admin-token"},
    )
    assert answer.status_code == 200 and SECRET not in answer.get_data(as_text=True)
    assert SECRET not in worker.text() and SECRET not in (error or "")
    # And the string form, stored before pack loads refused it, is refused by the worker
    with db.unit_of_work(engine) as session:
        session.execute(
            text("UPDATE actions SET runner_config = CAST(:c AS jsonb) WHERE ref = :r"),
            {"c": json.dumps({"command": "echo hi {{ parameters.msg }}"}), "r": f"{name}.greet"},
        )
    event_id = _send(engine, celery_app, f"{name}.alert", {"host": hostile})
    (enforcement,) = _enforced(engine, event_id)
    wait_until(lambda: status(engine, enforcement["execution_id"]) == "dead", 60, what="refusal")
    assert not marker.exists()


def test_a_backtracking_regex_holds_no_worker(
    engine: Engine, settings: config.Settings, celery_app: Any, pool: Pool, tmp_path: Path
) -> None:
    # Given a rule whose regex backtracks exponentially on Python's re, and an unrelated action
    actions = [{"name": "other", "runner": "noop"}, {"name": "never", "runner": "noop"}]
    name = _load(
        engine,
        tmp_path,
        actions,
        lambda n: [
            {
                "name": "evil",
                "trigger": f"{n}.s",
                "action": f"{n}.never",
                "criteria": {"payload.s": {"regex": "^(a+)+$"}},
            }
        ],
    )
    pool.start(concurrency=2)
    # When two events that took 50 s each on the old code arrive, then an unrelated request
    hostile = [_send(engine, celery_app, f"{name}.s", {"s": "a" * 40 + "!"}) for _ in range(2)]
    (other,) = submit(engine, settings, celery_app, f"{name}.other", [{}])
    # Then the unrelated action runs at once and the events are processed (no match)
    wait_until(lambda: status(engine, other) == "succeeded", 30, what="the unrelated action")
    for event_id in hostile:
        assert _enforced(engine, event_id) == []
    with engine.connect() as conn:
        waited = conn.execute(
            text(
                "SELECT extract(epoch FROM started_at - enqueued_at) FROM executions WHERE id = :i"
            ),
            {"i": other},
        ).scalar_one()
    assert waited < 10


def test_a_poison_event_fails_for_good_and_is_replayable(
    engine: Engine,
    hostile_settings: config.Settings,
    celery_app: Any,
    pool: Pool,
    tmp_path: Path,
) -> None:
    # Given an event stored before payloads were bounded: nested far deeper than any decoder
    # takes (the worker's every try fails), and a healthy event behind it
    name = _load(
        engine,
        tmp_path,
        [{"name": "ok", "runner": "noop"}],
        lambda n: [{"name": "any", "trigger": f"{n}.t", "action": f"{n}.ok"}],
    )
    deep = "[" * 5000 + "]" * 5000
    with db.unit_of_work(engine) as session:
        poison = session.execute(
            text("""INSERT INTO events (trigger, payload, received_at)
                    VALUES (:t, CAST(:p AS jsonb), now() - interval '1 hour') RETURNING id"""),
            {"t": f"{name}.t", "p": '{"deep": ' + deep + "}"},
        ).scalar_one()
    pool.start(concurrency=1)
    # When it is published as often as the sweeper would (each try counted)
    for _ in range(hostile_settings.event_max_failures):
        usher_celery.send_event(celery_app, poison)
    with db.unit_of_work(engine) as session:
        wait_until(lambda: events.state(session, poison)["failed"], 60, what="the event failed")
        state = events.state(session, poison)
    # Then it ended failed with its error, and recovery no longer picks it up
    assert state["failures"] == hostile_settings.event_max_failures and state["error"]
    with db.unit_of_work(engine) as session:
        assert poison not in recovery.unprocessed_events(session, 0)
    healthy = _send(engine, celery_app, f"{name}.t", {"n": 1})
    assert [e["status"] for e in _enforced(engine, healthy)] == ["executed"]
    # And a replay gives it its tries back
    with db.unit_of_work(engine) as session:
        events.replay(session, poison)
        assert events.state(session, poison) == {
            "processed": False,
            "failed": False,
            "failures": 0,
            "error": None,
        }
        assert poison in recovery.unprocessed_events(session, 0)
