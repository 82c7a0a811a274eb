"""Bulk intake: POST /api/v1/executions/batch and /api/v1/events/batch, against real Postgres.

Per-item outcomes, FIFO order, partial acceptance on a full line, auth and malformed bodies
without workers; batch events end to end with a real worker at the end.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from app import celery as usher_celery
from app import config, db, tokens
from policies import admission, events, intake, recovery
from policies import packs as app_packs
from tests.support import invariants, packs
from tests.support.api import AUTH
from tests.support.flow import wait_until
from tests.support.workers import Pool

pytestmark = pytest.mark.timeout(120)

BATCH = "/api/v1/executions/batch"
EVENTS = "/api/v1/events/batch"


@pytest.fixture
def settings(api_settings: config.Settings) -> config.Settings:
    return api_settings


@pytest.fixture
def pack(engine: Engine, tmp_path: Path) -> str:
    """job: limit 2, line of 5, an integer ``n``; by_host: one line per host, limit 1."""
    return packs.load(
        engine,
        tmp_path,
        [
            {
                "name": "job",
                "runner": "noop",
                "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}},
                "policy": {"concurrency": 2, "max_queue_length": 5},
            },
            {
                "name": "by_host",
                "runner": "noop",
                "policy": {"concurrency": 1, "partition_by": ["host"]},
            },
        ],
    )


def _rows(engine: Engine, ref: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("""SELECT e.id, e.seq, e.status, e.priority, e.parameters, q.partition_key
                        FROM executions e JOIN actions a ON a.id = e.action_id
                        JOIN queues q ON q.id = e.queue_id
                        WHERE a.ref = :ref ORDER BY e.seq"""),
                {"ref": ref},
            ).all()
        )


def test_each_item_is_accepted_or_refused_on_its_own(
    client: FlaskClient, engine: Engine, pack: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a line of 5 (limit 2) and a batch mixing good and bad items
    job = f"{pack}.job"
    items: list[Any] = [
        {"action": job, "parameters": {"n": 0}},
        {"action": f"{pack}.nope"},
        {"action": job, "parameters": {"n": "one"}},
        {"action": job, "priority": 5000},
        "not an object",
        {"parameters": {}},
        {"action": job, "parameters": {"n": 1}, "priority": 0},
        {"action": job, "parameters": {"n": 2}},
        {"action": job, "parameters": {"n": 3}},
        {"action": job, "parameters": {"n": 4}},
        {"action": job, "parameters": {"n": 5}},
        {"action": job, "parameters": {"n": 6}},
        {"action": job, "parameters": {"n": 7}},
        {"action": job, "parameters": "not an object"},
    ]
    # When it is posted
    with caplog.at_level(logging.WARNING, logger="web.api"):
        response = client.post(BATCH, json={"items": items}, headers=AUTH)
    # Then every item has a result, in request order
    assert response.status_code == 202
    body = response.get_json()
    results = body["items"]
    assert [r["index"] for r in results] == list(range(len(items)))
    errors = {r["index"]: r["error"] for r in results if "error" in r}
    assert {i: e["status"] for i, e in errors.items()} == {
        1: 404,
        2: 422,
        3: 400,
        4: 400,
        5: 400,
        12: 429,
        13: 422,
    }
    assert errors[1]["code"] == "unknown_action" and "nope" in errors[1]["message"]
    assert errors[2]["message"].startswith("parameters.n:")
    assert "priority" in errors[3]["message"]
    assert errors[12]["code"] == "queue_full" and "is full (5 waiting)" in errors[12]["message"]
    # ... the messages are those of the single endpoint
    single = client.post("/api/v1/executions", json=items[2], headers=AUTH)
    assert (
        single.status_code == 422 and single.get_json()["error"]["message"] == errors[2]["message"]
    )
    # ... as sent one by one: 2 run at once, 5 wait, the 8th is refused
    accepted = [r for r in results if "id" in r]
    assert [r["index"] for r in accepted] == [0, 6, 7, 8, 9, 10, 11]
    assert [r["status"] for r in accepted] == ["scheduled"] * 2 + ["queued"] * 5
    assert (body["accepted"], body["refused"]) == (7, 7)
    # ... seq follows request order and nothing is lost
    rows = _rows(engine, job)
    assert [r.id for r in rows] == [r["id"] for r in accepted]
    assert [r.seq for r in rows] == [r["seq"] for r in accepted] == [1, 2, 3, 4, 5, 6, 7]
    assert [r.parameters["n"] for r in rows] == [0, 1, 2, 3, 4, 5, 6]
    assert invariants.counter_mismatches(engine) == []
    # ... and every refused item left a record in the log
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert sorted(int(r.args[0]) for r in refused) == sorted(errors)  # type: ignore[index]


def test_values_postgres_cannot_store_are_refused_per_item(
    client: FlaskClient, engine: Engine, pack: str
) -> None:
    # JSON may hold lone surrogates ("\\ud800") and NULs; Postgres stores neither.
    raw = (
        '{"items": [{"action": "a\\ud800"}, {"action": "a\\u0000"},'
        f' {{"action": "{pack}.job", "parameters": {{"s": "\\ud800"}}}},'
        f' {{"action": "{pack}.job", "parameters": {{"n": 1}}}}]}}'
    )
    headers = AUTH | {"Content-Type": "application/json"}
    body = client.post(BATCH, data=raw, headers=headers).get_json()
    assert [r.get("error", {}).get("status") for r in body["items"]] == [400, 400, 422, None]
    events_raw = '{"events": [{"trigger": "a\\ud800"}]}'
    assert client.post(EVENTS, data=events_raw, headers=headers).status_code == 400
    single = client.post("/api/v1/executions", data='{"action": "x\\ud800"}', headers=headers)
    assert single.status_code == 400
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM executions")).scalar_one() == 1
        assert conn.execute(text("SELECT count(*) FROM events")).scalar_one() == 0


def test_a_line_full_before_the_batch_refuses_all_of_it(
    client: FlaskClient, engine: Engine, pack: str
) -> None:
    job = f"{pack}.job"
    first = client.post(BATCH, json={"items": [{"action": job}] * 7}, headers=AUTH).get_json()
    assert (first["accepted"], first["refused"]) == (7, 0)  # 2 running + 5 waiting
    again = client.post(BATCH, json={"items": [{"action": job}] * 3}, headers=AUTH).get_json()
    assert (again["accepted"], again["refused"]) == (0, 3)
    assert {r["error"]["status"] for r in again["items"]} == {429}
    single = client.post("/api/v1/executions", json={"action": job}, headers=AUTH)
    assert single.status_code == 429
    assert invariants.counter_mismatches(engine) == []


def test_fifo_holds_across_single_and_batch_requests_and_partitions(
    client: FlaskClient, engine: Engine, settings: config.Settings, pack: str
) -> None:
    by_host = f"{pack}.by_host"
    single = {"action": by_host, "parameters": {"host": "a"}}
    assert client.post("/api/v1/executions", json=single, headers=AUTH).status_code == 202
    hosts = ["a", "b", "a", "b", "b", "a"]
    items = [{"action": by_host, "parameters": {"host": h, "i": i}} for i, h in enumerate(hosts)]
    body = client.post(BATCH, json={"items": items}, headers=AUTH).get_json()
    assert body["accepted"] == 6
    single = {"action": by_host, "parameters": {"host": "b"}}
    assert client.post("/api/v1/executions", json=single, headers=AUTH).status_code == 202
    rows = _rows(engine, by_host)
    for host in ("a", "b"):
        line = [r for r in rows if r.partition_key == f"host={host}"]
        # one line per host: seq gap-free, in request order, the oldest one granted
        assert [r.seq for r in line] == list(range(1, len(line) + 1))
        assert [r.parameters.get("i") for r in line] == (
            [None, 0, 2, 5] if host == "a" else [1, 3, 4, None]
        )
        assert [r.status for r in line] == ["scheduled"] + ["queued"] * (len(line) - 1)
    # The next grant on a line is the oldest waiting one
    scheduled = next(r for r in rows if r.partition_key == "host=b" and r.status == "scheduled")
    with db.unit_of_work(engine) as session:
        assert admission.claim(session, scheduled.id, 1, "w/1", 15)
    with db.unit_of_work(engine) as session:
        released = admission.release(
            session, settings, admission.Ended(scheduled.id, 1, "succeeded")
        )
    assert [g.execution_id for g in released.grants] == [
        next(r.id for r in rows if r.partition_key == "host=b" and r.seq == 2)
    ]
    assert invariants.fifo_violations(engine, invariants.queue_ids(engine, by_host)) == 0
    assert invariants.counter_mismatches(engine) == []


def test_a_paused_action_takes_the_batch_and_grants_nothing(
    client: FlaskClient, engine: Engine, pack: str
) -> None:
    job = f"{pack}.job"
    assert client.post(f"/api/v1/actions/{job}/pause", headers=AUTH).status_code == 200
    body = client.post(BATCH, json={"items": [{"action": job}] * 3}, headers=AUTH).get_json()
    assert [r["status"] for r in body["items"]] == ["queued"] * 3


def test_enqueue_many_groups_lines_and_returns_the_grants(
    engine: Engine, settings: config.Settings, pack: str
) -> None:
    requests = [{"action": f"{pack}.job", "parameters": {"n": i}} for i in range(3)] + [
        {"action": f"{pack}.by_host", "parameters": {"host": "x"}}
    ]
    with db.unit_of_work(engine) as session:
        results = intake.enqueue_many(session, settings, requests)
    assert (results.accepted, results.refused) == (4, 0)
    assert [r.status for r in results] == ["scheduled", "scheduled", "queued", "scheduled"]
    assert sorted(g.execution_id for g in results.grants) == sorted(
        r.execution_id for r in results if r.status == "scheduled"
    )
    with db.unit_of_work(engine) as session:
        assert intake.enqueue_many(session, settings, []) == []


def test_batch_writes_need_an_admin_token(client: FlaskClient, engine: Engine, pack: str) -> None:
    with db.unit_of_work(engine) as session:
        reader = tokens.create(session, "reader", read_only=True)
    body = {"items": [{"action": f"{pack}.job"}]}
    events_body = {"events": [{"trigger": "alert"}]}
    for path, payload in ((BATCH, body), (EVENTS, events_body)):
        assert client.post(path, json=payload).status_code == 401
        forbidden = client.post(path, json=payload, headers={"Authorization": f"Bearer {reader}"})
        assert forbidden.status_code == 403
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM executions")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM events")).scalar_one() == 0


@pytest.mark.parametrize("path", [BATCH, EVENTS])
@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {},
        {"items": {}, "events": {}},
        {"items": [], "events": []},
        {"items": "x", "events": "x"},
        {"items": [{}] * 1001, "events": [{"trigger": "a"}] * 1001},
    ],
)
def test_malformed_batches_are_a_400(client: FlaskClient, path: str, body: Any) -> None:
    response = client.post(
        path, data=json.dumps(body), headers=AUTH | {"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_request"


def test_a_bad_event_refuses_the_whole_event_batch(client: FlaskClient, engine: Engine) -> None:
    batch = [{"trigger": "alert"}, {"trigger": ""}, {"trigger": "alert"}]
    response = client.post(EVENTS, json={"events": batch}, headers=AUTH)
    assert response.status_code == 400
    assert response.get_json()["error"]["message"].startswith("events[1]:")
    nul = [{"trigger": "alert", "payload": {"t": "a\u0000"}}]
    assert client.post(EVENTS, json={"events": nul}, headers=AUTH).status_code == 400
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM events")).scalar_one() == 0


def _rules(engine: Engine, tmp_path: Path, pack: str) -> None:
    """alert -> job (n from the payload) when severity is high; a disabled one; a bad one."""
    rules = tmp_path / pack / "rules"
    rules.mkdir()
    common = {"trigger": "alert", "criteria": {"payload.severity": {"eq": "high"}}}
    for rule in (
        {"name": "page", "action": f"{pack}.job", "parameters": {"n": "{{ event.payload.n }}"}},
        {"name": "quiet", "action": f"{pack}.job", "enabled": False},
        {"name": "typo", "action": f"{pack}.job", "parameters": {"n": "{{ event.payload.x }}"}},
    ):
        (rules / f"{rule['name']}.yaml").write_text(json.dumps(common | rule))
    with db.unit_of_work(engine) as session:
        app_packs.load(session, tmp_path / pack)


def test_event_batch_is_stored_in_order_and_processed_once(
    client: FlaskClient, engine: Engine, settings: config.Settings, pack: str, tmp_path: Path
) -> None:
    _rules(engine, tmp_path, pack)
    batch = [{"trigger": "alert", "payload": {"severity": "high", "n": i}} for i in range(7)]
    batch.insert(3, {"trigger": "alert", "payload": {"severity": "low", "n": 99}})
    response = client.post(EVENTS, json={"events": batch}, headers=AUTH)
    assert response.status_code == 202
    ids = response.get_json()["event_ids"]
    assert len(ids) == 8 and ids == sorted(ids)
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT id, payload FROM events WHERE id = ANY(:ids) ORDER BY id"), {"ids": ids}
        ).all()
    assert [r.payload for r in stored] == [b["payload"] for b in batch]
    # Processed as the worker does it (no worker here): one transaction for the batch
    with db.unit_of_work(engine) as session:
        processed = events.process_many(session, settings, ids)
    assert processed is not None
    by_rule: dict[str, list[Any]] = {}
    for enforcement in processed.enforcements:
        by_rule.setdefault(enforcement.rule.split(".")[-1], []).append(enforcement)
    assert {r: len(e) for r, e in by_rule.items()} == {"page": 7, "quiet": 7, "typo": 7}
    assert {e.status for e in by_rule["quiet"]} == {"skipped"}
    assert {e.status for e in by_rule["typo"]} == {"rejected"}
    assert "InvalidParameters" in (by_rule["typo"][0].reason or "")
    # the line holds 5 and runs 2: the first 7 pages fit, in event order
    pages = by_rule["page"]
    assert [e.status for e in pages] == ["executed"] * 7
    assert [e.event_id for e in pages] == [i for i in ids if i != ids[3]]
    rows = _rows(engine, f"{pack}.job")
    assert [r.id for r in rows] == [e.execution_id for e in pages]
    assert [r.parameters["n"] for r in rows] == list(range(7))
    assert len(processed.grants) == 2
    # Once: processing again (a redelivered message, the sweeper) enforces nothing more
    with db.unit_of_work(engine) as session:
        again = events.process_many(session, settings, ids)
        single = events.process(session, settings, ids[0])
    assert again is not None and again.enforcements == [] and single.enforcements == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM enforcements")).scalar_one() == 21
    assert _unprocessed(engine) == 0
    # A batch of events past the line's room: the excess is rejected with its reason
    more = [{"trigger": "alert", "payload": {"severity": "high", "n": 7}}] * 2
    with db.unit_of_work(engine) as session:
        extra = events.process_many(session, settings, events.store_many(session, more))
    assert extra is not None
    rejected = [e for e in extra.enforcements if e.rule.endswith(".page")]
    assert [e.status for e in rejected] == ["rejected", "rejected"]
    assert all("QueueFull" in (e.reason or "") for e in rejected)
    assert invariants.counter_mismatches(engine) == []


def test_the_sweeper_finds_batched_events_whose_message_was_lost(engine: Engine) -> None:
    with db.unit_of_work(engine) as session:
        ids = events.store_many(session, [{"trigger": "alert"}, {"trigger": "other"}])
    with db.unit_of_work(engine) as session:
        _age(session, ids)
    with db.unit_of_work(engine) as session:
        assert recovery.unprocessed_events(session, 30) == ids


@pytest.mark.broker
@pytest.mark.timeout(240)
def test_events_the_sweeper_publishes_again_keep_their_order(
    engine: Engine,
    celery_app: Any,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    from tasks import sweeper

    # Given 60 stored events whose batch message is slow (still in the broker, unread)
    pack = packs.load(
        engine, tmp_path, [{"name": "job", "runner": "noop", "policy": {"concurrency": 3}}]
    )
    _rules(engine, tmp_path, pack)
    batch = [{"trigger": "alert", "payload": {"severity": "high", "n": i}} for i in range(60)]
    with db.unit_of_work(engine) as session:
        ids = events.store_many(session, batch)
        _age(session, ids)
    usher_celery.send_events(celery_app, ids)
    # When the sweeper publishes them again, and two worker processes take both messages
    assert sweeper.sweep()["events"] == len(ids)
    worker_pool.start(concurrency=2)
    # Every event processed first: before any is, no execution exists and none is unfinished.
    wait_until(lambda: not _unprocessed(engine), 120, what="every event processed")
    wait_until(lambda: invariants.unfinished(engine, f"{pack}.job") == 0, 90, what="executions")
    # Then each event was enforced once, and the line holds them in the events' order
    rows = _rows(engine, f"{pack}.job")
    assert [r.parameters["n"] for r in rows] == list(range(60))


def _age(session: Any, ids: list[int]) -> None:
    """As if the events had been stored an hour ago (their message lost or slow)."""
    session.execute(
        text("UPDATE events SET received_at = now() - interval '1 hour' WHERE id = ANY(:i)"),
        {"i": ids},
    )


def _unprocessed(engine: Engine) -> int:
    query = text("SELECT count(*) FROM events WHERE processed_at IS NULL")
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


@pytest.mark.broker
@pytest.mark.timeout(240)
def test_batch_events_end_to_end_with_a_worker(
    client: FlaskClient,
    engine: Engine,
    settings: config.Settings,
    celery_app: Any,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    # Given a rule on a roomy line and a running worker
    pack = packs.load(
        engine,
        tmp_path,
        [
            {
                "name": "job",
                "runner": "noop",
                "policy": {"concurrency": 3, "max_queue_length": 1000},
            }
        ],
    )
    _rules(engine, tmp_path, pack)
    worker_pool.start(concurrency=2)
    # The sweeper too: should a message be lost (the filesystem broker can lose one that is
    # read while being written), it publishes the batch's events again, one by one.
    worker_pool.start_beat()
    # When 3 batches of events arrive, one message each
    ids: list[int] = []
    for b in range(3):
        batch = [
            {"trigger": "alert", "payload": {"severity": "high", "n": b * 100 + i}}
            for i in range(100)
        ]
        response = client.post(EVENTS, json={"events": batch}, headers=AUTH)
        assert response.status_code == 202
        ids += response.get_json()["event_ids"]

    # Then each is enforced once and every execution runs, in FIFO order
    wait_until(lambda: not _unprocessed(engine), 100, what="every event processed")
    shown = client.get(f"/api/v1/events/{ids[-1]}", headers=AUTH).get_json()
    assert shown["processed"] is True
    assert {e["status"] for e in shown["enforcements"]} == {"executed", "skipped", "rejected"}
    job = f"{pack}.job"
    wait_until(lambda: invariants.unfinished(engine, job) == 0, 90, what="every execution")
    rows = _rows(engine, job)
    assert len(rows) == 300 and {r.status for r in rows} == {"succeeded"}
    for b in range(3):  # two worker processes may take batches out of order, never items
        assert [r.parameters["n"] for r in rows if r.parameters["n"] // 100 == b] == [
            b * 100 + i for i in range(100)
        ]
    with engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT count(*) FROM enforcements WHERE status = 'executed'")
            ).scalar_one()
            == 300
        )
    queue_ids = invariants.queue_ids(engine, job)
    assert invariants.max_active(engine, queue_ids) <= 3
    assert invariants.fifo_violations(engine, queue_ids) == 0
    assert invariants.counter_mismatches(engine) == []
    # and the worker took the batches as batch tasks
    assert usher_celery.PROCESS_EVENTS in "".join(w.text() for w in worker_pool.workers)


def test_a_failing_batch_is_taken_event_by_event(
    engine: Engine,
    settings: config.Settings,
    celery_app: Any,
    pack: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tasks import events as event_tasks

    _rules(engine, tmp_path, pack)
    with db.unit_of_work(engine) as session:
        ids = events.store_many(
            session, [{"trigger": "alert", "payload": {"severity": "high", "n": i}} for i in (1, 2)]
        )
    whole_batch = events.process_many

    def fails_for_batches(session: Any, settings: config.Settings, event_ids: Any) -> Any:
        if len(event_ids) > 1:
            raise RuntimeError("a batch-wide failure")
        return whole_batch(session, settings, event_ids)

    monkeypatch.setattr(events, "process_many", fails_for_batches)
    assert event_tasks.process_events(ids) == 6  # 3 rules x 2 events, one event at a time
    with db.unit_of_work(engine) as session:
        assert all(events.processed(session, i) for i in ids)


def test_a_template_that_raises_rejects_the_enforcement() -> None:
    from app.errors import InvalidParameters
    from policies import templates

    with pytest.raises(InvalidParameters, match="division"):
        templates.render({"n": "{{ 1 // event.payload.d }}"}, {"event": {"payload": {"d": 0}}})
