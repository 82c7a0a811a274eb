"""Idempotency keys on POST /api/v1/executions, /executions/batch, /events and /events/batch,
against a real Postgres: the same key again answers the first answer and creates nothing,
a different request with it is a 409, two racing requests make one execution, and a key
older than USHER_IDEMPOTENCY_TTL_S is a new key."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from app import config, db
from policies import idempotency
from tests.support import packs
from tests.support.api import AUTH, settings_with_token

pytestmark = pytest.mark.timeout(120)

TTL_S = 2


@pytest.fixture
def settings(db_url: str, broker_url: str | None, tmp_path: Path) -> config.Settings:
    return settings_with_token(db_url, broker_url, tmp_path, idempotency_ttl_s=TTL_S)


@pytest.fixture
def ref(engine: Engine, tmp_path: Path) -> str:
    action = {
        "name": "job",
        "runner": "noop",
        "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}},
        "policy": {"concurrency": 1, "max_queue_length": 50},
    }
    return f"{packs.load(engine, tmp_path, [action])}.job"


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def _post(client: FlaskClient, body: Any, key: str | None = None, path: str = "executions") -> Any:
    headers = dict(AUTH) | ({"Idempotency-Key": key} if key is not None else {})
    return client.post(f"/api/v1/{path}", json=body, headers=headers)


def _error(answer: Any) -> tuple[int, str]:
    return answer.status_code, answer.get_json()["error"]["code"]


def test_the_same_key_twice_answers_the_first_answer_and_creates_nothing(
    client: FlaskClient, engine: Engine, ref: str
) -> None:
    # Given a request with a key, answered 202
    body = {"action": ref, "parameters": {"n": 1}, "priority": 2}
    first = _post(client, body, "order-17")
    assert first.status_code == 202, first.text
    # When it is sent again (its parameters' keys in another order, say), and once more
    again = _post(client, {"priority": 2, "parameters": {"n": 1}, "action": ref}, "order-17")
    third = _post(client, body, "order-17")
    # Then each answers 200 with the first's body, and there is one execution
    assert (again.status_code, third.status_code) == (200, 200)
    assert again.get_json() == third.get_json() == first.get_json()
    assert _count(engine, "executions") == 1
    # And the key is the action's: another action, or no key, makes a new execution
    other = _post(client, body, "order-18")
    assert other.status_code == 202 and other.get_json()["id"] != first.get_json()["id"]
    assert _post(client, body).status_code == 202
    assert _count(engine, "executions") == 3


def test_the_same_key_with_a_different_request_is_a_conflict(
    client: FlaskClient, engine: Engine, ref: str
) -> None:
    body = {"action": ref, "parameters": {"n": 1}}
    assert _post(client, body, "k1").status_code == 202
    for different in (
        {"action": ref, "parameters": {"n": 2}},
        {"action": ref, "parameters": {"n": 1}, "priority": 1},
        {"action": ref, "parameters": {"n": 1}, "delay_s": 60},
        {"action": ref, "parameters": {"n": 1}, "run_at": "2030-01-01T00:00:00Z"},
    ):
        answer = _post(client, different, "k1")
        assert _error(answer) == (409, "idempotency_conflict"), different
        assert "k1" in answer.get_json()["error"]["message"]
    assert _count(engine, "executions") == 1
    # A delayed request keeps its key too: the same delay again is the same request
    later = {"action": ref, "delay_s": 30}
    first = _post(client, later, "k2")
    assert first.get_json()["status"] == "delayed"
    assert _post(client, later, "k2").get_json() == first.get_json()
    assert _count(engine, "executions") == 2


def test_a_refused_request_keeps_no_key_and_a_bad_key_is_a_400(
    client: FlaskClient, engine: Engine, ref: str
) -> None:
    # A request refused (parameters, unknown action) keeps nothing: fixed, it goes through
    assert _post(client, {"action": ref, "parameters": {"n": "x"}}, "k").status_code == 422
    assert _post(client, {"action": ref + "x"}, "k").status_code == 404
    assert _post(client, {"action": ref, "parameters": {"n": 3}}, "k").status_code == 202
    assert _count(engine, "idempotency_keys") == 1
    # A key is 1..200 printable characters
    for bad in ("", "x" * 201, "tab\there"):
        answer = _post(client, {"action": ref}, bad)
        assert _error(answer) == (400, "invalid_request"), bad
    assert _post(client, {"action": ref}, "x" * 200).status_code == 202


def test_two_racing_requests_with_one_key_make_one_execution(
    app: Any, engine: Engine, ref: str
) -> None:
    # Given a request held open (its transaction) while a second with the key arrives
    answers: list[Any] = []
    barrier = threading.Barrier(8)

    def send() -> None:
        barrier.wait()
        answers.append(_post(app.test_client(), {"action": ref, "parameters": {"n": 5}}, "race"))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # Then one created the execution and the others answered its body
    assert sorted(a.status_code for a in answers) == [200] * 7 + [202]
    assert len({a.get_data() for a in answers}) == 1
    assert _count(engine, "executions") == 1


class _Undo(Exception):
    pass


def _claim_while_held(
    engine: Engine, settings: config.Settings, c: idempotency.Claim, commit: bool
) -> list[idempotency.Taken]:
    """Claim ``c`` in a transaction, let a second transaction claim it meanwhile (it must
    wait), then commit (with an answer) or roll back; the second's outcome."""
    results: list[idempotency.Taken] = []

    def second() -> None:
        with db.unit_of_work(engine) as session:
            results.extend(idempotency.claim(session, settings, [c]))

    racer = threading.Thread(target=second)
    try:
        with db.unit_of_work(engine) as first:
            assert idempotency.claim(first, settings, [c]) == [idempotency.Taken(True)]
            racer.start()
            time.sleep(0.5)
            assert results == [] and racer.is_alive()  # waiting on the first's insert
            idempotency.remember(first, [(c, {"id": 1})])
            if not commit:
                raise _Undo
    except _Undo:
        pass
    racer.join(timeout=10)
    return results


def test_the_second_request_waits_for_the_first_to_commit_or_roll_back(
    engine: Engine, settings: config.Settings, ref: str
) -> None:
    fingerprint = idempotency.fingerprint({"a": 1})
    # When the first commits, the second finds the key taken, with the first's answer
    c = idempotency.Claim(f"execution:{ref}", "slow", fingerprint)
    assert _claim_while_held(engine, settings, c, commit=True) == [
        idempotency.Taken(False, {"id": 1})
    ]
    # When it rolls back, the second takes the key
    c = idempotency.Claim(f"execution:{ref}", "undone", fingerprint)
    assert _claim_while_held(engine, settings, c, commit=False) == [idempotency.Taken(True)]


def test_batch_items_carry_their_own_keys(client: FlaskClient, engine: Engine, ref: str) -> None:
    items = [
        {"action": ref, "parameters": {"n": 1}, "key": "a"},
        {"action": ref, "parameters": {"n": 2}, "key": "b"},
        {"action": ref, "parameters": {"n": 3}},
        {"action": ref, "parameters": {"n": 1}, "key": "a"},  # the same key twice: one
        {"action": ref, "parameters": {"n": 9}, "key": "b"},  # the same key, different: 409
        {"action": ref, "parameters": {"n": "x"}, "key": "c"},  # refused: keeps no key
        {"action": ref, "key": ""},  # a bad key: this item's 400
        {"action": ref, "key": 7},
    ]
    first = client.post("/api/v1/executions/batch", json={"items": items}, headers=AUTH)
    assert first.status_code == 202
    got = first.get_json()["items"]
    assert got[3]["id"] == got[0]["id"] and got[3]["replayed"] is True
    assert "replayed" not in got[0]
    assert got[4]["error"]["code"] == "idempotency_conflict"
    assert got[5]["error"]["status"] == 422
    assert [got[i]["error"]["status"] for i in (6, 7)] == [400, 400]
    assert "key" in got[6]["error"]["message"]
    assert _count(engine, "executions") == 3
    # The same batch again: the keyed items answer their first answer; the other is new
    again = client.post("/api/v1/executions/batch", json={"items": items[:4]}, headers=AUTH)
    assert again.status_code == 202
    repeated = again.get_json()["items"]
    assert [r.get("replayed", False) for r in repeated] == [True, True, False, True]
    assert [r["id"] for r in repeated[:2]] == [got[0]["id"], got[1]["id"]]
    assert _count(engine, "executions") == 4
    # A batch all of whose items were seen answers 200; a key is shared with single requests
    assert (
        client.post("/api/v1/executions/batch", json={"items": items[:2]}, headers=AUTH).status_code
        == 200
    )
    single = _post(client, {"action": ref, "parameters": {"n": 2}}, "b")
    assert single.status_code == 200 and single.get_json()["id"] == got[1]["id"]
    fixed = {"action": ref, "parameters": {"n": 4}, "key": "c"}
    assert (
        client.post("/api/v1/executions/batch", json={"items": [fixed]}, headers=AUTH).get_json()[
            "accepted"
        ]
        == 1
    )


def test_event_keys_are_per_trigger(client: FlaskClient, engine: Engine) -> None:
    event = {"trigger": "shop.order", "payload": {"order": 17}}
    first = _post(client, event, "e1", "events")
    assert first.status_code == 202, first.text
    again = _post(client, event, "e1", "events")
    assert again.status_code == 200 and again.get_json() == first.get_json()
    assert _count(engine, "events") == 1
    changed = _post(client, {**event, "payload": {"order": 18}}, "e1", "events")
    assert _error(changed) == (409, "idempotency_conflict")
    other = _post(client, {**event, "trigger": "shop.refund"}, "e1", "events")
    assert other.status_code == 202 and other.get_json()["event_id"] != first.get_json()["event_id"]
    # Batch items: a key seen before gives its first event; a conflict refuses the batch
    batch = {
        "events": [
            {**event, "key": "e1"},
            {"trigger": "shop.order", "payload": {"order": 19}, "key": "e2"},
            {"trigger": "shop.order", "payload": {"order": 20}},
        ]
    }
    answer = client.post("/api/v1/events/batch", json=batch, headers=AUTH)
    assert answer.status_code == 202
    ids = answer.get_json()
    assert ids["event_ids"][0] == first.get_json()["event_id"] and ids["replayed"] == [0]
    assert _count(engine, "events") == 4
    bad = {"events": [{"trigger": "shop.order", "payload": {"order": 21}, "key": "e2"}]}
    refused = client.post("/api/v1/events/batch", json=bad, headers=AUTH)
    assert _error(refused) == (409, "idempotency_conflict")
    assert "events[0]" in refused.get_json()["error"]["message"]
    twice = client.post("/api/v1/events/batch", json={"events": batch["events"][:2]}, headers=AUTH)
    assert twice.status_code == 200 and twice.get_json()["replayed"] == [0, 1]
    # The first answer names a bad item by its place in the request, replays or not
    mixed = {"events": [{**event, "key": "e1"}, {"trigger": "", "payload": {}}]}
    answer = client.post("/api/v1/events/batch", json=mixed, headers=AUTH)
    assert answer.status_code == 400 and "events[1]" in answer.get_json()["error"]["message"]
    assert _count(engine, "events") == 4


def test_a_key_older_than_the_ttl_is_a_new_key(
    client: FlaskClient, engine: Engine, settings: config.Settings, ref: str
) -> None:
    body = {"action": ref, "parameters": {"n": 1}}
    first = _post(client, body, "old").get_json()
    assert _post(client, {"action": ref, "parameters": {"n": 2}}, "old").status_code == 409
    time.sleep(TTL_S + 0.5)
    # Past the TTL the key is a new one: a new execution, even with other parameters
    renewed = _post(client, {"action": ref, "parameters": {"n": 2}}, "old")
    assert renewed.status_code == 202 and renewed.get_json()["id"] != first["id"]
    assert _post(client, {"action": ref, "parameters": {"n": 2}}, "old").status_code == 200
    # And the sweeper's pruning deletes the expired keys only
    _post(client, body, "pruned")
    time.sleep(TTL_S + 0.5)
    _post(client, body, "fresh")
    with db.unit_of_work(engine) as session:
        assert idempotency.prune(session, settings.idempotency_ttl_s) == 2
    with engine.connect() as conn:
        left = conn.execute(text("SELECT key FROM idempotency_keys")).scalars().all()
    assert left == ["fresh"]
