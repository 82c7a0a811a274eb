"""Group commit of single requests (``web.grouped``) under a race: 32 clients post at once
to one line of limit 1 through waitress, a real worker running what is granted.

Each answer comes after its commit (its execution is in Postgres when the client reads the
answer); ``seq`` is gap-free and each answer's ``seq`` is the stored one; the grants follow
``seq`` (FIFO), never more than one at once; and the requests were in fact grouped (fewer
transactions than requests). Events likewise: every 202 names a stored event.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from sqlalchemy import Engine, text

from app import config
from tests.support import api, invariants, packs
from tests.support.flow import wait_final
from tests.support.workers import Pool
from web import groups

# Not marked broker: its subject is the web's grouping, so the Redis pass of CI leaves it out.
pytestmark = [pytest.mark.timeout(300), pytest.mark.processes]
CLIENTS, EACH = 32, 25


@pytest.fixture
def settings(api_settings: config.Settings) -> config.Settings:
    return api_settings


@pytest.fixture
def app(settings: config.Settings, celery_app: Any) -> Flask:
    import web

    # As many request threads as clients: every client's request is in flight at once.
    flask_app = web.create_app(settings, celery_app)
    flask_app.config["USHER_TEST_THREADS"] = CLIENTS
    return flask_app


def _stored(engine: Engine, table: str, ids: list[int]) -> dict[int, Any]:
    column = "seq" if table == "executions" else "trigger"
    with engine.connect() as conn:
        rows = conn.execute(
            text(f"SELECT id, {column} AS v FROM {table} WHERE id = ANY(:ids)"), {"ids": ids}
        ).all()
    return {r.id: r.v for r in rows}


def test_racing_single_requests_are_grouped_in_commit_order(
    app: Flask, engine: Engine, settings: config.Settings, served: int, tmp_path: Path
) -> None:
    policy = {"concurrency": 1, "max_queue_length": 100_000}
    name = packs.load(engine, tmp_path, [{"name": "one", "runner": "noop", "policy": policy}])
    ref = f"{name}.one"
    workers = Pool(settings, tmp_path / "logs")
    workers.start(concurrency=2, actions=f"{name}.*")
    base = f"http://127.0.0.1:{served}"
    local = threading.local()
    late: list[int] = []

    def post(n: int) -> dict[str, Any]:
        http = getattr(local, "http", None) or httpx.Client(
            base_url=base, headers=api.AUTH, timeout=60
        )
        local.http = http
        answer = http.post("/api/v1/executions", json={"action": ref, "parameters": {"n": n}})
        assert answer.status_code == 202, answer.text
        body: dict[str, Any] = answer.json()
        # Answered only once committed: it is there for anyone to read now
        if body["id"] not in _stored(engine, "executions", [body["id"]]):
            late.append(body["id"])
        return body

    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            answers = list(pool.map(post, range(CLIENTS * EACH)))
        wait_final(engine, [ref], 120)
    finally:
        workers.stop_all()
    assert late == []
    ids = [a["id"] for a in answers]
    stored = _stored(engine, "executions", ids)
    # Every answer's seq is its stored one, and they are 1..N without a gap
    assert {a["id"]: a["seq"] for a in answers} == stored
    assert sorted(stored.values()) == list(range(1, CLIENTS * EACH + 1))
    # Grants followed seq, one at a time
    lines = invariants.queue_ids(engine, ref)
    assert invariants.fifo_violations(engine, lines) == 0
    assert invariants.max_active(engine, lines) == 1
    assert invariants.counter_mismatches(engine) == []
    # And they were grouped: fewer transactions than requests
    with app.app_context():
        group = groups.executions()
    assert group.items == CLIENTS * EACH and group.batches < group.items


def test_racing_single_events_are_each_stored_before_their_answer(
    app: Flask, engine: Engine, served: int
) -> None:
    base = f"http://127.0.0.1:{served}"

    def post(n: int) -> int:
        with httpx.Client(base_url=base, headers=api.AUTH, timeout=60) as http:
            answer = http.post("/api/v1/events", json={"trigger": f"race.{n % 3}"})
        assert answer.status_code == 202, answer.text
        event_id: int = answer.json()["event_id"]
        assert event_id in _stored(engine, "events", [event_id])
        return event_id

    with ThreadPoolExecutor(CLIENTS) as pool:
        ids = list(pool.map(post, range(CLIENTS * 4)))
    assert len(set(ids)) == len(ids) == CLIENTS * 4
    # A bad one among them is its own 400; the others are stored
    with httpx.Client(base_url=base, headers=api.AUTH, timeout=60) as http:
        bad = http.post("/api/v1/events", json={"trigger": "x" * 1000})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"
