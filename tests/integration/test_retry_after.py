"""A request refused because its line is full (429 queue_full) says when to retry: a
``Retry-After`` header in whole seconds, from the line's pace, and ``retry_after_s`` in the
error (and in a refused batch item's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from app import config, db
from policies import admission
from tests.support import packs
from tests.support.api import AUTH

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def settings(api_settings: config.Settings) -> config.Settings:
    return api_settings


def _line(engine: Engine, tmp_path: Path, **policy: Any) -> str:
    """A line of 1 slot with room for 1 waiting."""
    action = {"name": "job", "runner": "noop", "policy": {"max_queue_length": 1, **policy}}
    return packs.load(engine, tmp_path, [action]) + ".job"


def _post(client: FlaskClient, ref: str) -> Any:
    return client.post("/api/v1/executions", json={"action": ref, "parameters": {}}, headers=AUTH)


def _retry_after(response: Any) -> int:
    assert response.status_code == 429, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "queue_full"
    seconds = int(response.headers["Retry-After"])
    assert seconds >= 1 and error["retry_after_s"] == seconds
    return seconds


def test_a_full_line_without_a_pace_says_the_default(
    client: FlaskClient, engine: Engine, tmp_path: Path
) -> None:
    # Given a full line that has never finished a run
    ref = _line(engine, tmp_path, concurrency=1)
    assert [_post(client, ref).status_code for _ in range(2)] == [202, 202]
    # Then a request more is told to come back in 5 s
    assert _retry_after(_post(client, ref)) == 5


def test_a_full_line_says_when_its_running_execution_should_end(
    client: FlaskClient, engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    # Given a line whose runs take 40 s, one running for 10 s and one waiting
    ref = _line(engine, tmp_path, concurrency=1)
    first = _post(client, ref).get_json()["id"]
    with db.unit_of_work(engine) as session:
        assert admission.claim(session, first, 1, "w/1", 60) is not None
    with db.unit_of_work(engine) as session:
        admission.release(session, settings, admission.Ended(first, 1, "succeeded"))
        session.execute(
            text(
                "UPDATE attempts SET started_at = finished_at - interval '40 seconds' "
                "WHERE execution_id = :i"
            ),
            {"i": first},
        )
    running = _post(client, ref).get_json()["id"]
    with db.unit_of_work(engine) as session:
        assert admission.claim(session, running, 1, "w/1", 60) is not None
        session.execute(
            text(
                "UPDATE execution_state SET started_at = now() - interval '10 seconds' "
                "WHERE id = :i"
            ),
            {"i": running},
        )
    assert _post(client, ref).status_code == 202
    # Then a request more is told to come back when the running one should end: in 30 s
    assert 29 <= _retry_after(_post(client, ref)) <= 31


def test_a_full_rate_limited_line_says_when_its_window_frees(
    client: FlaskClient, engine: Engine, tmp_path: Path
) -> None:
    # Given a line of 10 slots allowed 1 grant a minute: one granted, one waiting
    ref = _line(engine, tmp_path, concurrency=10, rate_limit={"count": 1, "per_s": 60})
    assert [_post(client, ref).get_json()["status"] for _ in range(2)] == ["scheduled", "queued"]
    # Then a request more is told to come back when the minute is over
    assert 58 <= _retry_after(_post(client, ref)) <= 60


def test_each_refused_batch_item_says_it_too(
    client: FlaskClient, engine: Engine, tmp_path: Path
) -> None:
    ref = _line(engine, tmp_path, concurrency=1)
    items = [{"action": ref, "parameters": {}} for _ in range(4)]
    response = client.post("/api/v1/executions/batch", json={"items": items}, headers=AUTH)
    assert response.status_code == 202
    errors = [item["error"] for item in response.get_json()["items"] if "error" in item]
    assert [(e["code"], e["retry_after_s"]) for e in errors] == [("queue_full", 5)] * 2
