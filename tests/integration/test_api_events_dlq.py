"""REST and CLI for events and the dead-letter queue, against a real Postgres (no workers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from app import cli, config, db
from app.errors import AlreadyFinished
from policies import admission, dlq, events, lines
from tests.support import invariants, packs
from tests.support.api import AUTH
from tests.support.flow import WaitingOnALock, submit

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def settings(api_settings: config.Settings) -> config.Settings:
    return api_settings


@pytest.fixture
def pack(engine: Engine, tmp_path: Path) -> str:
    name = packs.load(
        engine,
        tmp_path,
        [
            {
                "name": "job",
                "runner": "noop",
                "policy": {"concurrency": 5, "retry": {"max_retries": 0}},
            }
        ],
    )
    rules = tmp_path / name / "rules"
    rules.mkdir()
    (rules / "on_alert.yaml").write_text(
        json.dumps(
            {
                "name": "on_alert",
                "trigger": "alert",
                "action": f"{name}.job",
                "criteria": {"payload.severity": {"eq": "high"}},
                "parameters": {},
            }
        )
    )
    with db.unit_of_work(engine) as session:
        from policies import packs as app_packs

        app_packs.load(session, tmp_path / name)
    return name


def _dead(
    engine: Engine, settings: config.Settings, ref: str, params: dict[str, Any] | None = None
) -> int:
    """An execution that ran and failed for good."""
    with db.unit_of_work(engine) as session:
        enqueued = admission.enqueue(session, settings, ref, params or {})
    with db.unit_of_work(engine) as session:
        assert admission.claim(session, enqueued.execution_id, 1, "w/1", 15)
    with db.unit_of_work(engine) as session:
        released = admission.release(
            session,
            settings,
            admission.Ended(enqueued.execution_id, 1, "failed", error="boom", transient=False),
        )
    assert released.status == "dead"
    return enqueued.execution_id


def test_post_event_stores_it_and_answers_at_once(
    client: FlaskClient, engine: Engine, settings: config.Settings, pack: str
) -> None:
    response = client.post(
        "/api/v1/events",
        json={"trigger": "alert", "payload": {"severity": "high"}},
        headers=AUTH,
    )
    assert response.status_code == 202
    body = response.get_json()
    assert body["processed"] is False and body["enforcements"] == []
    # A worker would process it; do it here, then the API shows the enforcement.
    with db.unit_of_work(engine) as session:
        events.process(session, settings, body["event_id"])
    shown = client.get(f"/api/v1/events/{body['event_id']}", headers=AUTH).get_json()
    assert shown["processed"] is True
    [enforcement] = shown["enforcements"]
    assert enforcement["rule"] == f"{pack}.on_alert"
    assert enforcement["status"] == "executed" and enforcement["execution_id"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"trigger": ""},
        {"trigger": 5},
        {"trigger": "x" * 201},
        {"trigger": "a\u0000b"},
        {"trigger": "alert", "payload": {"text": "nul \u0000"}},
    ],
)
def test_bad_events_are_a_4xx_and_store_nothing(
    client: FlaskClient, engine: Engine, body: dict[str, Any]
) -> None:
    response = client.post("/api/v1/events", json=body, headers=AUTH)
    assert 400 <= response.status_code < 500
    assert response.get_json()["error"]["code"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM events")).scalar_one() == 0


def test_events_need_an_admin_token(client: FlaskClient) -> None:
    assert client.post("/api/v1/events", json={"trigger": "a"}).status_code == 401
    assert client.get("/api/v1/dlq").status_code == 401
    assert client.post("/api/v1/dlq/1/replay").status_code == 401


def test_dlq_list_replay_and_purge(
    client: FlaskClient, engine: Engine, settings: config.Settings, pack: str
) -> None:
    first, second = _dead(engine, settings, f"{pack}.job"), _dead(engine, settings, f"{pack}.job")
    listed = client.get("/api/v1/dlq", headers=AUTH).get_json()
    assert [i["id"] for i in listed["items"]] == [second, first]
    assert listed["total"] == 2 and "boom" in listed["items"][0]["error"]
    replayed = client.post(f"/api/v1/dlq/{first}/replay", headers=AUTH)
    assert replayed.status_code == 200
    new_id = replayed.get_json()["id"]
    shown = client.get(f"/api/v1/executions/{new_id}", headers=AUTH).get_json()
    assert shown["replay_of"] == first and shown["status"] in ("scheduled", "queued")
    # Replaying again, or replaying something that is not dead, is a conflict
    assert client.post(f"/api/v1/dlq/{first}/replay", headers=AUTH).status_code == 409
    assert client.post(f"/api/v1/dlq/{new_id}/replay", headers=AUTH).status_code == 409
    assert client.post("/api/v1/dlq/999999/replay", headers=AUTH).status_code == 404
    assert client.post("/api/v1/dlq/purge", headers=AUTH).get_json() == {"purged": 1}
    assert client.get("/api/v1/dlq", headers=AUTH).get_json()["total"] == 0
    assert invariants.counter_mismatches(engine) == []


def test_a_replay_and_a_cancel_of_the_same_dead_execution_do_not_deadlock(
    engine: Engine, settings: config.Settings, pack: str
) -> None:
    dead = _dead(engine, settings, f"{pack}.job")

    def replay() -> None:
        with db.unit_of_work(engine) as session:
            dlq.replay(session, settings, dead)

    # Given a cancel of the dead execution that holds its line
    with pytest.raises(AlreadyFinished), db.unit_of_work(engine) as session:
        lines.lock_line_of(session, settings, dead)
        # When a replay of it starts meanwhile
        other = WaitingOnALock(engine, replay)
        # Then the cancel reaches the execution row (and refuses: it is dead), not a deadlock
        admission.cancel(session, settings, dead)
    assert other.finished() == []
    with engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT count(*) FROM executions WHERE replay_of = :id"), {"id": dead}
            ).scalar_one()
            == 1
        )
    assert invariants.counter_mismatches(engine) == []


def test_a_replay_into_a_line_its_action_now_maps_it_to_keeps_the_lock_order(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    policy = {"concurrency": 1, "partition_by": ["k"], "retry": {"max_retries": 0}}
    ref = packs.load(engine, tmp_path, [{"name": "pr", "runner": "noop", "policy": policy}])
    ref += ".pr"
    dead = _dead(engine, settings, ref, {"k": "b"})  # in line "k=b"
    # Given the action is no longer partitioned (a pack reload), so a replay goes to line ""
    with engine.begin() as conn:
        conn.execute(text("UPDATE actions SET policy = policy - 'partition_by'"))
    submit(engine, settings, None, ref, [{"k": "x"}])
    with engine.connect() as conn:
        line_ids = dict(conn.execute(text("SELECT partition_key, id FROM queues")).all())

    def replay() -> None:
        with db.unit_of_work(engine) as session:
            dlq.replay(session, settings, dead)

    # When a re-admission of the action holds line "" (it takes "", then "k=b")
    with db.unit_of_work(engine) as session:
        lines.lock_line(session, settings, line_ids[""])
        other = WaitingOnALock(engine, replay)
        # Then the replay waits for "" holding nothing, and "k=b" is still free to take
        lines.lock_line(session, settings, line_ids["k=b"])
    assert other.finished() == []
    assert invariants.counter_mismatches(engine) == []


def test_a_pack_load_that_removes_a_rule_and_its_events_do_not_deadlock(
    engine: Engine, settings: config.Settings, pack: str, tmp_path: Path
) -> None:
    from policies import control
    from policies import packs as app_packs

    with db.unit_of_work(engine) as session:
        event_id = events.store(session, "alert", {"severity": "high"})

    def process() -> None:
        with db.unit_of_work(engine) as session:
            events.process(session, settings, event_id)

    # Given a pack load that has deleted the rule (its file is gone), not yet committed
    (tmp_path / pack / "rules" / "on_alert.yaml").unlink()
    with db.unit_of_work(engine) as session:
        app_packs.load(session, tmp_path / pack)
        # When an event for that rule is processed meanwhile
        other = WaitingOnALock(engine, process)
        # Then the load still re-admits the action's lines, and the event waits for it
        control.readmit_refs(session, settings, [f"{pack}.job"])
    assert other.finished() == []
    with db.unit_of_work(engine) as session:
        assert events.processed(session, event_id)
        assert events.enforcements(session, event_id) == []  # the rule was gone
    assert invariants.counter_mismatches(engine) == []


def test_an_execution_shows_its_attempt_history(
    client: FlaskClient, engine: Engine, settings: config.Settings, pack: str
) -> None:
    dead = _dead(engine, settings, f"{pack}.job")
    shown = client.get(f"/api/v1/executions/{dead}", headers=AUTH).get_json()
    [attempt] = shown["attempts"]
    assert attempt["attempt"] == 1 and attempt["outcome"] == "failed"
    assert attempt["worker"] == "w/1" and attempt["error"] == "boom"


def test_cli_dlq_and_events(
    engine: Engine, settings: config.Settings, pack: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USHER_DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("USHER_HOME", str(settings.home))
    if settings.broker_url:
        monkeypatch.setenv("USHER_BROKER_URL", settings.broker_url)
    dead = _dead(engine, settings, f"{pack}.job")
    runner = CliRunner()
    listed = runner.invoke(cli.main, ["dlq", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [i["id"] for i in json.loads(listed.output)] == [dead]
    replayed = runner.invoke(cli.main, ["dlq", "replay", str(dead)])
    assert replayed.exit_code == 0 and f"execution {dead} replayed as" in replayed.output
    assert runner.invoke(cli.main, ["dlq", "replay"]).exit_code == 2
    _dead(engine, settings, f"{pack}.job")
    purged = runner.invoke(cli.main, ["dlq", "purge", "--yes"])
    assert purged.exit_code == 0 and "purged 1" in purged.output
    # No worker runs here: the event is stored and the command says so instead of hanging
    sent = runner.invoke(
        cli.main,
        [
            "events",
            "send",
            "alert",
            "--payload",
            '{"severity": "high"}',
            "--timeout",
            "0.5",
            "--json",
        ],
    )
    assert sent.exit_code == 0, sent.output
    assert json.loads(sent.output)["processed"] is False


def test_a_failed_event_is_shown_and_replayed_over_the_api_and_cli(
    engine: Engine, settings: config.Settings, client: FlaskClient, pack: str
) -> None:
    # Given an event whose processing failed as often as it may
    with db.unit_of_work(engine) as session:
        event_id = events.store(session, "alert", {"severity": "high"})
        ok = events.store(session, "alert", {"severity": "low"})
    for _ in range(settings.event_max_failures):
        with db.unit_of_work(engine) as session:
            events.record_failure(session, settings, [event_id], "RuntimeError: boom")
    # Then the API shows it failed, with the error
    shown = client.get(f"/api/v1/events/{event_id}", headers=AUTH).get_json()
    assert shown["failed"] is True and shown["processed"] is False
    assert shown["failures"] == settings.event_max_failures and "boom" in shown["error"]
    # And only a failed event replays: others answer 409, an unknown one 404
    assert client.post(f"/api/v1/events/{ok}/replay", headers=AUTH).status_code == 409
    assert client.post("/api/v1/events/987654321/replay", headers=AUTH).status_code == 404
    replayed = client.post(f"/api/v1/events/{event_id}/replay", headers=AUTH)
    assert replayed.status_code == 200
    assert replayed.get_json()["failed"] is False and replayed.get_json()["failures"] == 0
    # And the CLI replays too
    for _ in range(settings.event_max_failures):
        with db.unit_of_work(engine) as session:
            events.record_failure(session, settings, [event_id], "RuntimeError: boom")
    env = {"USHER_DATABASE_URL": settings.database_url or "", "USHER_HOME": str(settings.home)}
    if settings.broker_url:
        env["USHER_BROKER_URL"] = settings.broker_url
    result = CliRunner().invoke(cli.main, ["events", "replay", str(event_id)], env=env)
    assert result.exit_code == 0, result.output
    with db.unit_of_work(engine) as session:
        assert events.state(session, event_id)["failed"] is False


def test_an_event_another_try_holds_is_skipped_not_waited_for(
    engine: Engine, settings: config.Settings, pack: str
) -> None:
    # Given an event that another try is processing (its row locked)
    with db.unit_of_work(engine) as session:
        event_id = events.store(session, "alert", {"severity": "high"})
    with engine.connect() as holder:
        holder.execute(text("SELECT 1 FROM events WHERE id = :i FOR UPDATE"), {"i": event_id})
        # When a duplicate message of it is processed: it returns at once, enforcing nothing
        with db.unit_of_work(engine) as session:
            session.execute(text("SET LOCAL lock_timeout = '5s'"))
            assert events.process(session, settings, event_id).enforcements == []
        holder.rollback()
    # Then the event is neither processed nor counted as failed, and is still enforced later
    with db.unit_of_work(engine) as session:
        assert events.state(session, event_id) == {
            "processed": False,
            "failed": False,
            "failures": 0,
            "error": None,
        }
        assert [e.status for e in events.process(session, settings, event_id).enforcements] == [
            "executed"
        ]
