"""Delayed runs (``run_at``, ``delay_s``, ``usher run --in``) against a real Postgres, and with
real ``usher beat`` and worker processes: a delayed execution holds no place in line until
its time, then joins its line within 2 s of it (times are the database's), in request order,
under the line's limit and FIFO; a cancelled one never runs; a full line rejects it."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from app import cli, config, db
from policies import delayed
from tests.support import invariants, packs
from tests.support.api import AUTH
from tests.support.flow import wait_final, wait_until
from tests.support.workers import Pool

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def settings(api_settings: config.Settings) -> config.Settings:
    return api_settings


def _pack(engine: Engine, tmp_path: Path, **policy: Any) -> str:
    """An action ``job`` (noop, an integer ``n``) with this policy; its ref."""
    action = {
        "name": "job",
        "runner": "noop",
        "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}},
        "policy": policy,
    }
    return f"{packs.load(engine, tmp_path, [action])}.job"


def _row(engine: Engine, execution_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT * FROM executions WHERE id = :id"), {"id": execution_id}
        ).one()


def _db_now(engine: Engine) -> datetime:
    with engine.connect() as conn:
        return conn.execute(text("SELECT clock_timestamp()")).scalar_one()


def _join(engine: Engine, settings: config.Settings) -> list[delayed.Joined]:
    """What a beat does when delayed runs fall due (without publishing: no worker here)."""
    done = []
    with db.unit_of_work(engine) as session:
        due = delayed.due(session)
    for queue_id, ids in sorted(due.items()):
        with db.unit_of_work(engine) as session:
            done.append(delayed.join(session, settings, queue_id, ids))
    return done


def _stats(client: FlaskClient, ref: str) -> Any:
    return client.get(f"/api/v1/actions/{ref}/queue-stats", headers=AUTH).get_json()


# --- the request and the wait, without workers ----------------------------------------------


def test_a_delayed_request_holds_no_place_in_line_until_it_joins(
    client: FlaskClient, engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # Given an action with limit 1
    ref = _pack(engine, tmp_path, concurrency=1)
    # When one execution is asked for in 1 s and one now
    later = client.post(
        "/api/v1/executions",
        json={"action": ref, "delay_s": 1, "parameters": {"n": 1}},
        headers=AUTH,
    )
    now = client.post("/api/v1/executions", json={"action": ref}, headers=AUTH)
    # Then the delayed one answers delayed, with no position, its time named
    assert later.status_code == 202, later.text
    body = later.get_json()
    assert body["status"] == "delayed" and body["position"] is None
    assert now.get_json()["status"] == "scheduled"
    row = _row(engine, body["id"])
    assert row.status == "delayed" and row.seq is None
    assert datetime.fromisoformat(body["run_at"]) == row.run_at
    assert 0.9 < (row.run_at - row.enqueued_at).total_seconds() < 1.5
    # And the line neither counts nor lists it; the API shows it delayed
    stats = _stats(client, ref)
    assert (stats["queue_length"], stats["total_enqueued"]) == (0, 1)
    shown = client.get(f"/api/v1/executions/{body['id']}", headers=AUTH).get_json()
    assert (shown["status"], shown["seq"], shown["position"], shown["eta"]) == (
        "delayed",
        None,
        None,
        None,
    )
    assert shown["run_at"] == body["run_at"]
    listed = client.get(f"/api/v1/executions?action={ref}&status=delayed", headers=AUTH)
    assert [e["id"] for e in listed.get_json()["items"]] == [body["id"]]
    # When it is not due yet, nothing joins
    assert _join(engine, settings) == []
    # When it falls due, it joins the line behind the one already there, with the next seq
    time.sleep(max((row.run_at - _db_now(engine)).total_seconds(), 0) + 0.05)
    (joined,) = _join(engine, settings)
    assert joined.joined == [(body["id"], 2)] and joined.grants == [] and joined.rejected == []
    row = _row(engine, body["id"])
    assert (row.status, row.seq) == ("queued", 2)
    assert row.enqueued_at == row.queued_at and row.enqueued_at >= row.run_at
    stats = _stats(client, ref)
    assert (stats["queue_length"], stats["total_enqueued"]) == (1, 2)
    # And a second beat doing the same changes nothing
    assert _join(engine, settings) == []
    assert invariants.counter_mismatches(engine) == []


def test_timing_is_checked_and_a_time_passed_joins_at_once(
    client: FlaskClient, engine: Engine, tmp_path: Path
) -> None:
    ref = _pack(engine, tmp_path)
    post = lambda body: client.post("/api/v1/executions", json=body, headers=AUTH)  # noqa: E731
    soon = (datetime.now().astimezone() + timedelta(seconds=60)).isoformat()
    for bad, says in [
        ({"action": ref, "delay_s": 1, "run_at": soon}, "not both"),
        ({"action": ref, "run_at": "2030-01-01T00:00:00"}, "timezone"),
        ({"action": ref, "run_at": "tomorrow"}, "run_at"),
        ({"action": ref, "run_at": 1_900_000_000}, "ISO 8601"),
        ({"action": ref, "delay_s": -1}, "delay_s"),
        ({"action": ref, "delay_s": 31 * 86_400}, "delay_s"),
        ({"action": ref, "delay_s": True}, "delay_s"),
        ({"action": ref, "run_at": "2999-01-01T00:00:00+00:00"}, "30 days"),
    ]:
        answer = post(bad)
        assert answer.status_code == 400, (bad, answer.text)
        assert says in answer.get_json()["error"]["message"], (bad, answer.text)
    # A time already passed, or no delay, is a request for now
    for now in ({"run_at": "2020-01-01T00:00:00Z"}, {"delay_s": 0}):
        answer = post({"action": ref, **now})
        assert answer.status_code == 202 and answer.get_json()["status"] == "scheduled"
    # A batch item takes the same fields, each item on its own
    items = [{"action": ref, "delay_s": 60}, {"action": ref, "delay_s": -5}, {"action": ref}]
    answer = client.post("/api/v1/executions/batch", json={"items": items}, headers=AUTH)
    results = answer.get_json()["items"]
    assert results[0]["status"] == "delayed" and results[0]["seq"] is None
    assert results[0]["run_at"] is not None
    assert results[1]["error"]["status"] == 400
    assert results[2]["status"] == "scheduled" and results[2]["seq"] == 3


def test_a_line_full_when_they_fall_due_takes_what_fits_and_rejects_the_rest(
    client: FlaskClient, engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # Given a line of 3 with limit 1, and 6 executions due at one time
    ref = _pack(engine, tmp_path, concurrency=1, max_queue_length=3)
    items = [{"action": ref, "delay_s": 0.5, "parameters": {"n": n}} for n in range(6)]
    answer = client.post("/api/v1/executions/batch", json={"items": items}, headers=AUTH)
    ids = [item["id"] for item in answer.get_json()["items"]]
    assert ids == sorted(ids)
    # When they fall due
    time.sleep(0.6)
    (joined,) = _join(engine, settings)
    # Then as many join as the same requests one by one would get in: one granted, three
    # waiting; the other two end rejected with the reason (as a request would get 429)
    assert [i for i, _ in joined.joined] == ids[:4]
    assert [g.execution_id for g in joined.grants] == ids[:1]
    assert joined.rejected == ids[4:]
    assert [_row(engine, i).status for i in ids] == ["scheduled"] + ["queued"] * 3 + [
        "rejected"
    ] * 2
    rejected = client.get(f"/api/v1/executions/{ids[5]}", headers=AUTH).get_json()
    assert "was full (3 waiting) when it fell due" in rejected["error"]
    assert rejected["finished_at"] is not None and rejected["seq"] is None
    assert invariants.counter_mismatches(engine) == []


def test_a_cancelled_delayed_execution_never_joins(
    client: FlaskClient, engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    ref = _pack(engine, tmp_path)
    body = client.post(
        "/api/v1/executions", json={"action": ref, "delay_s": 0.3}, headers=AUTH
    ).get_json()
    cancelled = client.post(f"/api/v1/executions/{body['id']}/cancel", headers=AUTH)
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    again = client.post(f"/api/v1/executions/{body['id']}/cancel", headers=AUTH)
    assert again.status_code == 409
    time.sleep(0.4)
    assert _join(engine, settings) == []
    row = _row(engine, body["id"])
    assert (row.status, row.seq, row.scheduled_at) == ("cancelled", None, None)
    stats = _stats(client, ref)
    assert (stats["total_enqueued"], stats["total_cancelled"]) == (0, 0)
    assert invariants.counter_mismatches(engine) == []


def test_beats_joining_at_once_join_each_execution_once_in_order(
    client: FlaskClient, engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # Given 300 executions of two lines due at one time
    refs = [_pack(engine, tmp_path, concurrency=2), _pack(engine, tmp_path, concurrency=2)]
    items = [{"action": refs[n % 2], "delay_s": 0.5, "parameters": {"n": n}} for n in range(300)]
    answer = client.post("/api/v1/executions/batch", json={"items": items}, headers=AUTH)
    ids = [item["id"] for item in answer.get_json()["items"]]
    time.sleep(0.6)
    # When four beats join them at the same moment
    barrier = threading.Barrier(4)
    done: list[delayed.Joined] = []
    errors: list[BaseException] = []

    def beat() -> None:
        try:
            barrier.wait()
            done.extend(_join(engine, settings))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=beat) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # Then each joined once, two granted per line, the rest waiting in request order
    assert errors == []
    joined = sorted(i for d in done for i, _ in d.joined)
    assert joined == sorted(ids)
    assert sum(len(d.grants) for d in done) == 4
    for ref in refs:
        with engine.connect() as conn:
            order = (
                conn.execute(
                    text("""SELECT e.id FROM executions e JOIN actions a ON a.id = e.action_id
                        WHERE a.ref = :ref ORDER BY e.seq"""),
                    {"ref": ref},
                )
                .scalars()
                .all()
            )
        assert order == [i for n, i in enumerate(ids) if refs[n % 2] == ref]
    assert invariants.counter_mismatches(engine) == []


# --- with usher beat and workers ------------------------------------------------------------


def _beat(pool: Pool) -> None:
    beat = pool.start_beat()
    log = pool.log_dir / "beat.log"
    wait_until(
        lambda: "beat: Starting..." in log.read_text(errors="replace") or beat.poll() is not None,
        30,
        what="beat to start",
    )
    assert beat.poll() is None, log.read_text(errors="replace")[-3000:]


def _pctl(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def test_delayed_runs_start_after_their_time_and_within_2s_of_it(
    client: FlaskClient, engine: Engine, worker_pool: Pool, tmp_path: Path
) -> None:
    # Given a worker and a beat
    ref = _pack(engine, tmp_path, concurrency=10)
    worker_pool.start(concurrency=4)
    _beat(worker_pool)
    # When executions are asked for 3 s from now (and a few at other delays), and one of
    # them is cancelled while it waits
    delays = [3, 3, 2, 2.5, 3.5, 4, 1.5, 3]
    ids = [
        client.post(
            "/api/v1/executions",
            json={"action": ref, "delay_s": d, "parameters": {"n": n}},
            headers=AUTH,
        ).get_json()["id"]
        for n, d in enumerate(delays)
    ]
    cancelled = client.post(f"/api/v1/executions/{ids[-1]}/cancel", headers=AUTH)
    assert cancelled.status_code == 200
    # Then each starts once its time has come, never before, and within 2 s of it
    wait_final(engine, [ref], timeout=60)
    rows = [_row(engine, i) for i in ids]
    ran, never = rows[:-1], rows[-1]
    assert [r.status for r in ran] == ["succeeded"] * len(ran)
    late = [(r.started_at - r.run_at).total_seconds() for r in ran]
    assert all(r.started_at >= r.run_at for r in ran), late
    assert max(late) <= 2.0, late
    joined = [(r.queued_at - r.run_at).total_seconds() for r in ran]
    print(
        f"\n{len(ran)} delayed runs: start after run_at p50 {_pctl(late, 0.5) * 1000:.0f} ms, "
        f"p99 {_pctl(late, 0.99) * 1000:.0f} ms; joined the line p50 "
        f"{_pctl(joined, 0.5) * 1000:.0f} ms, max {max(joined) * 1000:.0f} ms after it"
    )
    # And the cancelled one never ran
    assert (never.status, never.started_at, never.seq) == ("cancelled", None, None)


def test_a_thousand_due_at_one_second_join_in_request_order_and_run_fifo_under_the_limit(
    client: FlaskClient, engine: Engine, worker_pool: Pool, tmp_path: Path
) -> None:
    # Given a line of limit 3, workers and a beat
    ref = _pack(engine, tmp_path, concurrency=3)
    worker_pool.start(concurrency=4)
    worker_pool.start(concurrency=4)
    _beat(worker_pool)
    # When 1,000 executions are asked for at one time 4 s ahead, in one batch
    at = (_db_now(engine) + timedelta(seconds=4)).replace(microsecond=0)
    items = [{"action": ref, "run_at": at.isoformat(), "parameters": {"n": n}} for n in range(1000)]
    answer = client.post("/api/v1/executions/batch", json={"items": items}, headers=AUTH)
    assert answer.status_code == 202, answer.text
    ids = [item["id"] for item in answer.get_json()["items"]]
    assert {item["status"] for item in answer.get_json()["items"]} == {"delayed"}
    assert _stats(client, ref)["queue_length"] == 0
    # Then they all run, none before its time
    wait_final(engine, [ref], timeout=150)
    with engine.connect() as conn:
        rows = conn.execute(
            text("""SELECT e.id, e.seq, e.status, e.run_at, e.queued_at, e.started_at,
                           (e.parameters ->> 'n')::int AS n
                    FROM executions e WHERE e.id = ANY(:ids) ORDER BY e.seq"""),
            {"ids": ids},
        ).all()
    assert {r.status for r in rows} == {"succeeded"}
    assert all(r.started_at >= at for r in rows)
    # In request order: seq order is the request's
    assert [r.id for r in rows] == ids
    assert [r.n for r in rows] == list(range(1000))
    assert [r.seq for r in rows] == list(range(1, 1001))
    # Having joined within 2 s of their time
    assert max(r.queued_at for r in rows) - at <= timedelta(seconds=2)
    print(
        f"\n1,000 due at one second: joined {(rows[0].queued_at - at).total_seconds() * 1000:.0f}"
        f" ms after it (one transaction), all run {(rows[-1].started_at - at).total_seconds():.1f}"
        " s after it at limit 3"
    )
    # And never more than 3 at once, strictly first in, first out
    invariants.check_line(engine, ref, limit=3)
    assert invariants.max_active(engine, invariants.queue_ids(engine, ref)) == 3


@pytest.mark.usefixtures("cli_env")
def test_usher_run_in_2s_waits_then_runs(engine: Engine, worker_pool: Pool, tmp_path: Path) -> None:
    # Given a worker, a beat, and the command pointed at this test's database and broker
    ref = _pack(engine, tmp_path)
    worker_pool.start(concurrency=2)
    _beat(worker_pool)
    # When `usher run REF --in 2s --wait` runs
    before = _db_now(engine)
    result = CliRunner().invoke(
        cli.main, ["run", ref, "n=7", "--in", "2s", "--wait", "--timeout", "30", "--json"]
    )
    # Then it waited for its time, then ran
    assert result.exit_code == 0, result.output
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT * FROM executions WHERE action_id = (SELECT id FROM actions WHERE ref = :r)"
            ),
            {"r": ref},
        ).one()
    assert row.status == "succeeded" and row.parameters == {"n": 7}
    assert 2.0 <= (row.run_at - before).total_seconds() < 3.0
    assert row.run_at <= row.started_at <= row.run_at + timedelta(seconds=2)
    # And --at / --in are checked
    bad = CliRunner().invoke(cli.main, ["run", ref, "--in", "soon"])
    assert bad.exit_code == 2 and "not a duration" in bad.output
    both = CliRunner().invoke(cli.main, ["run", ref, "--in", "1s", "--at", "2030-01-01T00:00Z"])
    assert both.exit_code == 2 and "not both" in both.output
