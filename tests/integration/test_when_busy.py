"""When the line is busy (``when_busy``) and coalescing, through the API, batches, rules and
a schedule's tick; ``cancel_running`` with a real worker; racing duplicates coalescing.

Without a worker, a line of one holds its first execution ``scheduled``: every request after
it is busy.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

import web
from app import config, db, tokens
from app.errors import LineBusy
from policies import admission, events, schedules
from policies import packs as app_packs
from tests.support import invariants
from tests.support.flow import WaitingOnALock, status, wait_until
from tests.support.workers import Pool

pytestmark = pytest.mark.timeout(180)

TOKEN = "admin-token-for-when-busy"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
N = {"type": "object", "properties": {"n": {"type": "integer"}, "host": {"type": "string"}}}


@pytest.fixture
def settings(db_url: str, broker_url: str | None, tmp_path: Path) -> config.Settings:
    return config.load(
        database_url=db_url,
        broker_url=broker_url,
        home=tmp_path / "home",
        lease_s=6,
        api_token=TOKEN,
    )


@pytest.fixture
def client(settings: config.Settings, celery_app: Any) -> FlaskClient:
    return web.create_app(settings, celery_app).test_client()


def _action(name: str, policy: dict[str, Any], runner: str = "noop") -> dict[str, Any]:
    return {"name": name, "runner": runner, "parameters": N, "policy": policy}


@pytest.fixture
def pack(engine: Engine, tmp_path: Path) -> str:
    """Lines of one in each mode; rules on trigger <pack>.ping running each (payload.mode),
    and one on usher.execution that records every cancel."""
    name = f"b{uuid.uuid4().hex[:8]}"
    root = tmp_path / name
    for folder in ("actions", "rules"):
        (root / folder).mkdir(parents=True)
    (root / "pack.yaml").write_text(yaml.safe_dump({"name": name, "policy": {"concurrency": 1}}))
    actions = [
        _action("plain", {}),
        _action("skip", {"when_busy": "skip"}),
        _action("replace", {"when_busy": "replace"}),
        _action("cancel", {"when_busy": "cancel_running"}),
        _action("twin", {"coalesce": True}),
        _action("hosts", {"partition_by": ["host"], "when_busy": "skip"}),
        _action("audit", {"concurrency": 10}),
    ]
    for action in actions:
        (root / "actions" / f"{action['name']}.yaml").write_text(yaml.safe_dump(action))
    for mode in ("skip", "replace", "cancel", "twin"):
        rule = {
            "name": f"ping_{mode}",
            "trigger": f"{name}.ping",
            "criteria": {"payload.mode": {"eq": mode}},
            "action": f"{name}.{mode}",
            "parameters": {"n": "{{ event.payload.n }}"},
        }
        (root / "rules" / f"ping_{mode}.yaml").write_text(yaml.safe_dump(rule))
    audit = {
        "name": "audit_cancels",
        "trigger": "usher.execution",
        "criteria": {"payload.status": {"eq": "cancelled"}},
        "action": f"{name}.audit",
        "parameters": {"n": "{{ event.payload.execution_id }}"},
    }
    (root / "rules" / "audit_cancels.yaml").write_text(yaml.safe_dump(audit))
    with db.unit_of_work(engine) as session:
        app_packs.load(session, root)
    return name


def _post(client: FlaskClient, ref: str, n: int, **extra: Any) -> Any:
    body = {"action": ref, "parameters": {"n": n}, **extra}
    return client.post("/api/v1/executions", json=body, headers=AUTH)


def _accepted(client: FlaskClient, ref: str, n: int, **extra: Any) -> dict[str, Any]:
    response = _post(client, ref, n, **extra)
    assert response.status_code == 202, response.get_data(as_text=True)
    return dict(response.get_json())


def _rows(engine: Engine, ref: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("""SELECT e.id, e.seq, e.status, e.error, e.parameters, e.cancelled_by
                     FROM executions e
                        JOIN actions a ON a.id = e.action_id WHERE a.ref = :ref
                        ORDER BY e.id"""),
                {"ref": ref},
            ).all()
        )


def _sound(engine: Engine) -> None:
    """The counters match the executions (lines and levels), and every line is FIFO."""
    assert invariants.counter_mismatches(engine) == []
    with engine.connect() as conn:
        ids = list(conn.execute(text("SELECT id FROM queues")).scalars())
    assert invariants.fifo_violations(engine, ids) == 0


def _finish(engine: Engine, settings: config.Settings, execution_id: int) -> list[int]:
    with db.unit_of_work(engine) as session:
        assert admission.claim(session, execution_id, 1, "w", 30) is not None
    with db.unit_of_work(engine) as session:
        released = admission.release(
            session, settings, admission.Ended(execution_id, 1, "succeeded")
        )
    return [g.execution_id for g in released.grants]


# --- skip -----------------------------------------------------------------------------------


def test_skip_refuses_a_request_that_would_wait_with_409_line_busy(
    client: FlaskClient, engine: Engine, settings: config.Settings, pack: str
) -> None:
    ref = f"{pack}.skip"
    # Given a line of one whose slot is taken
    first = _accepted(client, ref, 1)
    assert first["status"] == "scheduled"
    # When another request comes
    response = _post(client, ref, 2)
    # Then it is refused with 409 line_busy, naming the action and what holds the line
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "line_busy"
    assert ref in error["message"] and "1 running or scheduled, 0 waiting" in error["message"]
    assert "all 1 of its slots are taken" in error["message"]
    # And nothing of it is left: no execution, no seq, no count
    assert [r.id for r in _rows(engine, ref)] == [first["id"]]
    _sound(engine)
    # When the slot frees, the next request runs at once with the next seq (no gap)
    assert _finish(engine, settings, first["id"]) == []
    after = _accepted(client, ref, 3)
    assert after["status"] == "scheduled"
    assert [r.seq for r in _rows(engine, ref)] == [1, 2]
    _sound(engine)


def test_skip_is_per_line_of_a_partitioned_action(client: FlaskClient, pack: str) -> None:
    ref = f"{pack}.hosts"
    for host in ("a", "b"):
        body = {"action": ref, "parameters": {"host": host}}
        assert client.post("/api/v1/executions", json=body, headers=AUTH).status_code == 202
    busy = client.post(
        "/api/v1/executions", json={"action": ref, "parameters": {"host": "a"}}, headers=AUTH
    )
    assert busy.status_code == 409
    assert f"{ref} [host=a]" in busy.get_json()["error"]["message"]


def test_a_request_may_set_when_busy_over_its_policy(
    client: FlaskClient, engine: Engine, pack: str
) -> None:
    plain, skip = f"{pack}.plain", f"{pack}.skip"
    _accepted(client, plain, 1)
    _accepted(client, skip, 1)
    # A queueing action's request that says skip is refused; a skipping one's that says
    # queue waits
    assert _post(client, plain, 2, when_busy="skip").status_code == 409
    assert _accepted(client, skip, 2, when_busy="queue")["status"] == "queued"
    assert _post(client, plain, 3, when_busy="later").status_code == 400
    # And replace, per request, supersedes the waiting one
    waiting = _accepted(client, plain, 4)
    newest = _accepted(client, plain, 5, when_busy="replace")
    rows = {r.id: r for r in _rows(engine, plain)}
    assert rows[waiting["id"]].status == "cancelled"
    assert rows[waiting["id"]].error.startswith(f"superseded by execution {newest['id']}")
    assert rows[waiting["id"]].cancelled_by == tokens.ADMIN_NAME  # who asked for the newest
    assert rows[newest["id"]].status == "queued"
    _sound(engine)


def test_batch_items_are_skipped_or_taken_one_by_one(
    client: FlaskClient, engine: Engine, pack: str
) -> None:
    ref = f"{pack}.skip"
    items = [
        {"action": ref, "parameters": {"n": 1}},
        {"action": ref, "parameters": {"n": 2}},
        {"action": ref, "parameters": {"n": 3}, "when_busy": "queue"},
        {"action": f"{pack}.plain", "parameters": {"n": 4}},
    ]
    response = client.post("/api/v1/executions/batch", json={"items": items}, headers=AUTH)
    assert response.status_code == 202
    body = response.get_json()
    assert (body["accepted"], body["refused"]) == (3, 1)
    first, second, third, fourth = body["items"]
    assert first["status"] == "scheduled" and first["seq"] == 1
    assert second["error"]["code"] == "line_busy" and second["error"]["status"] == 409
    assert third["status"] == "queued" and third["seq"] == 2
    assert fourth["status"] == "scheduled"
    _sound(engine)


# --- replace --------------------------------------------------------------------------------


def test_replace_keeps_only_the_newest_waiting(
    client: FlaskClient, engine: Engine, settings: config.Settings, pack: str
) -> None:
    ref = f"{pack}.replace"
    # Given a line of one running its first request
    running = _accepted(client, ref, 0)
    # When three more come one after another
    waiting = [_accepted(client, ref, n) for n in (1, 2, 3)]
    # Then each waited, and replaced the one waiting before it
    assert [w["status"] for w in waiting] == ["queued"] * 3
    rows = {r.id: r for r in _rows(engine, ref)}
    assert rows[running["id"]].status == "scheduled"
    for older, newer in itertools.pairwise(waiting):
        assert rows[older["id"]].status == "cancelled"
        assert rows[older["id"]].error.startswith(f"superseded by execution {newer['id']}")
    assert rows[waiting[-1]["id"]].status == "queued"
    # And the line counts one waiting, two cancelled
    stats = client.get(f"/api/v1/actions/{ref}/queue-stats", headers=AUTH).get_json()
    assert (stats["queue_length"], stats["active_count"], stats["total_cancelled"]) == (1, 1, 2)
    _sound(engine)
    # When the running one ends, the newest is the next to run
    assert _finish(engine, settings, running["id"]) == [waiting[-1]["id"]]
    _sound(engine)


def test_replace_in_one_batch_leaves_the_last_item_waiting(
    client: FlaskClient, engine: Engine, pack: str
) -> None:
    ref = f"{pack}.replace"
    items = [{"action": ref, "parameters": {"n": n}} for n in range(5)]
    body = client.post("/api/v1/executions/batch", json={"items": items}, headers=AUTH).get_json()
    ids = [item["id"] for item in body["items"]]
    statuses = [r.status for r in _rows(engine, ref)]
    assert statuses == ["scheduled", "cancelled", "cancelled", "cancelled", "queued"]
    assert [r.error for r in _rows(engine, ref)][1:4] == [
        f"superseded by execution {i} (when_busy: replace)" for i in ids[2:]
    ]
    _sound(engine)


# --- cancel_running -------------------------------------------------------------------------


def test_cancel_running_without_a_worker_cancels_the_scheduled_and_grants_the_new_one(
    client: FlaskClient, engine: Engine, pack: str
) -> None:
    ref = f"{pack}.cancel"
    first = _accepted(client, ref, 1)
    # A waiting one from a request that says queue
    waiting = _accepted(client, ref, 2, when_busy="queue")
    assert waiting["status"] == "queued"
    newest = _accepted(client, ref, 3)
    # The new one holds the slot at once; the one that held it and the waiting one are gone
    assert newest["status"] == "scheduled"
    rows = {r.id: r for r in _rows(engine, ref)}
    assert rows[first["id"]].status == "cancelled"
    assert rows[first["id"]].error == (
        f"cancelled for execution {newest['id']} (when_busy: cancel_running)"
    )
    assert rows[waiting["id"]].status == "cancelled"
    assert rows[waiting["id"]].error.startswith(f"superseded by execution {newest['id']}")
    _sound(engine)


def test_cancel_running_stops_the_running_one_and_runs_next(
    client: FlaskClient,
    engine: Engine,
    settings: config.Settings,
    worker_pool: Pool,
    tmp_path: Path,
    celery_app: Any,
) -> None:
    # Given a sleep action with a line of one and when_busy: cancel_running, and one worker
    # process (the new one can only run once the first's process is free)
    name = f"c{uuid.uuid4().hex[:8]}"
    root = tmp_path / name
    (root / "actions").mkdir(parents=True)
    (root / "pack.yaml").write_text(yaml.safe_dump({"name": name}))
    action = {
        "name": "deploy",
        "runner": "sleep",
        "policy": {"concurrency": 1, "when_busy": "cancel_running"},
    }
    (root / "actions" / "deploy.yaml").write_text(yaml.safe_dump(action))
    with db.unit_of_work(engine) as session:
        app_packs.load(session, root)
    ref = f"{name}.deploy"
    worker_pool.start(concurrency=1)
    body = {"action": ref, "parameters": {"seconds": 60}}
    first = client.post("/api/v1/executions", json=body, headers=AUTH).get_json()
    wait_until(lambda: status(engine, first["id"]) == "running", 60, what="the first running")
    # When a second request comes while it runs
    started = time.monotonic()
    body = {"action": ref, "parameters": {"seconds": 0.1}}
    response = client.post("/api/v1/executions", json=body, headers=AUTH)
    assert response.status_code == 202
    second = response.get_json()
    # Then the running one is cancelled at once, and the new one holds the slot
    assert second["status"] == "scheduled"
    assert status(engine, first["id"]) == "cancelled"
    # And its worker is stopped: the new one runs on the one process and succeeds
    wait_until(lambda: status(engine, second["id"]) == "succeeded", 30, what="the new one run")
    assert time.monotonic() - started < 30
    assert status(engine, first["id"]) == "cancelled"
    (row,) = [r for r in _rows(engine, ref) if r.id == first["id"]]
    assert row.error == f"cancelled for execution {second['id']} (when_busy: cancel_running)"
    invariants.check_line(engine, ref, limit=1)


# --- coalesce -------------------------------------------------------------------------------


def test_coalesce_returns_the_equal_waiting_execution(
    client: FlaskClient, engine: Engine, pack: str
) -> None:
    ref = f"{pack}.twin"
    running = _accepted(client, ref, 1)
    # Equal to the running one: it waits, a new execution (only waiting ones coalesce)
    waiting = _accepted(client, ref, 1)
    assert waiting["status"] == "queued" and waiting["id"] != running["id"]
    # Equal to the waiting one: 200, that execution, coalesced, nothing created
    response = _post(client, ref, 1)
    assert response.status_code == 200
    assert response.get_json() == {
        "id": waiting["id"],
        "status": "queued",
        "position": 1,
        "seq": waiting["seq"],
        "coalesced": True,
    }
    # Different parameters: a new one
    other = _accepted(client, ref, 2)
    assert "coalesced" not in other
    # In a batch: an item equal to a waiting one, and two equal items
    items = [{"action": ref, "parameters": {"n": n}} for n in (1, 3, 3)]
    body = client.post("/api/v1/executions/batch", json={"items": items}, headers=AUTH).get_json()
    first, fresh, again = body["items"]
    assert (first["id"], first["coalesced"]) == (waiting["id"], True)
    assert "coalesced" not in fresh and (again["id"], again["coalesced"]) == (fresh["id"], True)
    assert len(_rows(engine, ref)) == 4
    _sound(engine)


def test_racing_equal_requests_coalesce_into_one(
    engine: Engine, settings: config.Settings, pack: str
) -> None:
    ref = f"{pack}.twin"
    with db.unit_of_work(engine) as session:
        admission.enqueue(session, settings, ref, {"n": 0})  # the slot is taken
    ids: list[int] = []
    gate = threading.Barrier(8)

    def request() -> None:
        gate.wait()
        with db.unit_of_work(engine) as session:
            ids.append(admission.enqueue(session, settings, ref, {"n": 7}).execution_id)

    # Given eight threads asking for the same thing at once, all held at the line's lock
    with engine.connect() as conn, conn.begin():
        conn.execute(
            text("""SELECT q.id FROM queues q JOIN actions a ON a.id = q.action_id
                    WHERE a.ref = :ref FOR NO KEY UPDATE OF q"""),
            {"ref": ref},
        )
        threads = [threading.Thread(target=request) for _ in range(7)]
        for thread in threads:
            thread.start()
        waiting = WaitingOnALock(engine, request)
        time.sleep(0.5)  # the others reach the lock too
    # When the lock is let go, then they all get the one execution
    assert waiting.finished() == []
    for thread in threads:
        thread.join(timeout=30)
    assert len(ids) == 8 and len(set(ids)) == 1
    assert [r.parameters for r in _rows(engine, ref)] == [{"n": 0}, {"n": 7}]
    _sound(engine)


# --- rules and schedules --------------------------------------------------------------------


def _ping(engine: Engine, settings: config.Settings, pack: str, mode: str, n: int) -> Any:
    with db.unit_of_work(engine) as session:
        event_id = events.store(session, f"{pack}.ping", {"mode": mode, "n": n})
        processed = events.process(session, settings, event_id)
    (enforcement,) = processed.enforcements
    return enforcement, processed


def test_rules_skip_replace_cancel_running_and_coalesce(
    engine: Engine, settings: config.Settings, pack: str
) -> None:
    # skip: the second enforcement is rejected with the reason, nothing created
    first, _ = _ping(engine, settings, pack, "skip", 1)
    refused, _ = _ping(engine, settings, pack, "skip", 2)
    assert first.status == "executed" and first.execution_id is not None
    assert (refused.status, refused.execution_id) == ("rejected", None)
    assert refused.reason.startswith("LineBusy: the line of") and "is busy" in refused.reason
    assert len(_rows(engine, f"{pack}.skip")) == 1
    # replace: each new one supersedes the waiting one, and the cancel is an execution event
    _ping(engine, settings, pack, "replace", 1)
    older, _ = _ping(engine, settings, pack, "replace", 2)
    newer, processed = _ping(engine, settings, pack, "replace", 3)
    rows = {r.id: r for r in _rows(engine, f"{pack}.replace")}
    assert rows[older.execution_id].status == "cancelled"
    assert rows[older.execution_id].error.startswith(
        f"superseded by execution {newer.execution_id}"
    )
    assert len(processed.events) == 1
    with engine.connect() as conn:
        payload = conn.execute(
            text("SELECT payload FROM events WHERE id = :id"), {"id": processed.events[0]}
        ).scalar_one()
    assert (payload["execution_id"], payload["status"]) == (older.execution_id, "cancelled")
    # cancel_running: the one holding the slot is cancelled, the new one granted at once
    holder, _ = _ping(engine, settings, pack, "cancel", 1)
    taker, processed = _ping(engine, settings, pack, "cancel", 2)
    assert status(engine, holder.execution_id) == "cancelled"
    assert [g.execution_id for g in processed.grants] == [taker.execution_id]
    # coalesce: an equal request's enforcement points at the waiting execution
    _ping(engine, settings, pack, "twin", 0)
    waiting, _ = _ping(engine, settings, pack, "twin", 5)
    again, _ = _ping(engine, settings, pack, "twin", 5)
    assert (again.status, again.execution_id) == ("executed", waiting.execution_id)
    assert again.reason is not None and again.reason.startswith("coalesced")
    assert len(_rows(engine, f"{pack}.twin")) == 2
    _sound(engine)


def test_a_schedule_tick_on_a_busy_skip_line_is_rejected(
    engine: Engine, settings: config.Settings, tmp_path: Path, pack: str
) -> None:
    ref = f"{pack}.skip"
    with db.unit_of_work(engine) as session:
        admission.enqueue(session, settings, ref, {"n": 0})
    name = f"s{uuid.uuid4().hex[:8]}"
    root = tmp_path / name
    (root / "schedules").mkdir(parents=True)
    (root / "pack.yaml").write_text(yaml.safe_dump({"name": name}))
    tick = {"name": "often", "every_s": 60, "action": ref, "parameters": {"n": 1}}
    (root / "schedules" / "often.yaml").write_text(json.dumps(tick))
    with db.unit_of_work(engine) as session:
        app_packs.load(session, root)
    with engine.connect() as conn:
        due = conn.execute(
            text("SELECT next_fire_at FROM schedules WHERE ref = :r"), {"r": f"{name}.often"}
        ).scalar_one()
    with db.unit_of_work(engine) as session:
        fired = schedules.fire_due(session, settings, now=due + timedelta(seconds=0.2))
    (fire,) = fired.fires
    assert fire.enforcement is not None
    assert fire.enforcement.status == "rejected"
    assert fire.enforcement.reason is not None and fire.enforcement.reason.startswith("LineBusy")
    assert len(_rows(engine, ref)) == 1
    with pytest.raises(LineBusy):
        with db.unit_of_work(engine) as session:
            admission.enqueue(session, settings, ref, {"n": 2})
    _sound(engine)
