"""The events list (``GET /api/v1/events``, ``usher events list``) against a real Postgres:
newest first, the trigger filter, keyset pages, each event's enforcements and state, capped
payloads, bounded limits, the plan on a big table, and the CLI's table and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from app import bounds, cli, config, db, queries, sql
from policies import events
from tests.integration.test_schedules import load, write_pack
from tests.support.api import AUTH
from tests.support.command import usher
from web import schemas

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def settings(api_settings: config.Settings) -> config.Settings:
    return api_settings


@pytest.fixture
def pack(engine: Engine, tmp_path: Path) -> str:
    """Three rules on ``<pack>.alert``: one runs ``job``, one is refused (``strict`` needs
    ``n``), one is disabled."""
    strict = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    directory = write_pack(
        tmp_path,
        {},
        actions={"job": {"runner": "noop"}, "strict": {"runner": "noop", "parameters": strict}},
        rules={},
    )
    name = directory.name
    rules = {
        "run": {"action": f"{name}.job"},
        "refused": {"action": f"{name}.strict"},
        "off": {"action": f"{name}.job", "enabled": False},
    }
    for rule, document in rules.items():
        body = {"name": rule, "trigger": f"{name}.alert", "parameters": {}, **document}
        (directory / "rules" / f"{rule}.yaml").write_text(json.dumps(body))
    return load(engine, directory)


def _store(engine: Engine, trigger: str, payload: Any = None) -> int:
    with db.unit_of_work(engine) as session:
        return events.store(session, trigger, payload or {})


def _process(engine: Engine, settings: config.Settings, event_id: int) -> None:
    with db.unit_of_work(engine) as session:
        events.process(session, settings, event_id)


def _list(client: FlaskClient, **query: Any) -> dict[str, Any]:
    response = client.get("/api/v1/events", query_string=query, headers=AUTH)
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    schemas.Events.model_validate(body)  # the answer is what the document says
    return body


def test_events_newest_first_with_their_enforcements_and_state(
    engine: Engine, settings: config.Settings, client: FlaskClient, pack: str
) -> None:
    # Given a processed alert (three rules matched), an event no rule matched, a pending one,
    # one that failed for good and one with a big payload
    alert = _store(engine, f"{pack}.alert", {"host": "db1"})
    _process(engine, settings, alert)
    unmatched = _store(engine, f"{pack}.other")
    _process(engine, settings, unmatched)
    pending = _store(engine, f"{pack}.other")
    failed = _store(engine, f"{pack}.other")
    for _ in range(settings.event_max_failures):
        with db.unit_of_work(engine) as session:
            events.record_failure(session, settings, [failed], "RuntimeError: boom")
    big = _store(engine, f"{pack}.big", {"blob": "x" * 10_000})
    # When they are listed
    items = _list(client)["items"]
    # Then newest first, each in its state
    mine = [i for i in items if i["trigger"].startswith(f"{pack}.")]
    assert [i["id"] for i in mine] == [big, failed, pending, unmatched, alert]
    by_id = {i["id"]: i for i in mine}
    assert [by_id[i]["state"] for i in (alert, unmatched, pending, failed)] == [
        "processed",
        "processed",
        "pending",
        "failed",
    ]
    assert by_id[failed]["failures"] == settings.event_max_failures
    assert "boom" in by_id[failed]["error"]
    # And the alert's enforcements: rule, status, execution and reason of each
    found = {f["rule"]: f for f in by_id[alert]["enforcements"]}
    assert sorted(found) == [f"{pack}.off", f"{pack}.refused", f"{pack}.run"]
    assert found[f"{pack}.run"]["status"] == "executed"
    assert found[f"{pack}.run"]["execution_id"] is not None
    assert found[f"{pack}.run"]["reason"] is None
    assert found[f"{pack}.refused"]["status"] == "rejected"
    assert found[f"{pack}.refused"]["execution_id"] is None
    assert "InvalidParameters" in found[f"{pack}.refused"]["reason"]
    assert found[f"{pack}.off"]["status"] == "skipped"
    assert by_id[alert]["payload"] == {"host": "db1"}
    assert all(by_id[i]["enforcements"] == [] for i in (unmatched, pending, failed, big))
    # And a big payload is listed by its size, as execution lists show big values
    assert by_id[big]["payload"] == {"_truncated": True, "bytes": pytest.approx(10_012, abs=8)}
    shown = client.get(f"/api/v1/events/{alert}", headers=AUTH).get_json()
    assert {f["id"] for f in shown["enforcements"]} == {f["id"] for f in found.values()}


def test_the_trigger_filter_is_an_exact_match(
    engine: Engine, settings: config.Settings, client: FlaskClient, pack: str
) -> None:
    first = _store(engine, f"{pack}.alert")
    _store(engine, f"{pack}.alerts")
    _store(engine, f"{pack}.other")
    second = _store(engine, f"{pack}.alert")
    body = _list(client, trigger=f"{pack}.alert")
    assert [i["id"] for i in body["items"]] == [second, first]
    assert body["next"] is None
    assert _list(client, trigger=f"{pack}.ALERT")["items"] == []
    assert _list(client, trigger=f"{pack}.%")["items"] == []
    assert _list(client, trigger="")["items"] != []  # empty: no filter


def test_pages_follow_the_cursor_until_the_last(
    engine: Engine, settings: config.Settings, client: FlaskClient, pack: str
) -> None:
    trigger = f"{pack}.tick"
    ids = [_store(engine, trigger, {"n": n}) for n in range(7)]
    _store(engine, f"{pack}.other")  # between pages of the filter, never on one
    ids.append(_store(engine, trigger, {"n": 7}))
    seen: list[int] = []
    pages = 0
    before = None
    while True:
        query: dict[str, Any] = {"trigger": trigger, "limit": 3}
        if before is not None:
            query["before"] = before
        body = _list(client, **query)
        pages += 1
        seen += [i["id"] for i in body["items"]]
        assert len(body["items"]) <= 3
        if body["next"] is None:
            break
        assert body["next"] == body["items"][-1]["id"]
        before = body["next"]
    assert seen == sorted(ids, reverse=True)
    assert pages == 3
    # A page that ends exactly at the last event says there is no next one
    assert _list(client, trigger=trigger, limit=8)["next"] is None
    assert _list(client, trigger=trigger, limit=7)["next"] == ids[1]


@pytest.mark.parametrize(
    "query",
    [
        {"limit": 0},
        {"limit": bounds.EVENTS_PAGE.high + 1},
        {"limit": -1},
        {"limit": "ten"},
        {"before": 0},
        {"before": "x"},
    ],
)
def test_a_bad_limit_or_cursor_is_a_400_json_error(
    client: FlaskClient, query: dict[str, Any]
) -> None:
    response = client.get("/api/v1/events", query_string=query, headers=AUTH)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_request"


def test_the_limit_defaults_to_50_and_takes_500(
    engine: Engine, settings: config.Settings, client: FlaskClient
) -> None:
    with db.unit_of_work(engine) as session:
        events.store_many(session, [{"trigger": "bulk"}] * 501)
    default = _list(client, trigger="bulk")
    assert len(default["items"]) == bounds.EVENTS_PAGE_DEFAULT == 50
    most = _list(client, trigger="bulk", limit=bounds.EVENTS_PAGE.high)
    assert len(most["items"]) == 500 and most["next"] is not None
    assert client.get("/api/v1/events").status_code == 401  # a token, like every read


def test_a_page_of_one_trigger_reads_the_trigger_index(engine: Engine) -> None:
    # Given a big table where the trigger asked for is rare and old
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO events (trigger, payload) "
                "SELECT CASE WHEN n % 1000 = 0 THEN 'rare' ELSE 'common' END, '{}' "
                "FROM generate_series(1, 100000) n"
            )
        )
        conn.execute(text("ANALYZE events"))
        expected = conn.execute(
            text("SELECT count(*) FROM events WHERE trigger = 'rare' AND id < 50000")
        ).scalar_one()
    # Then a page of it walks (trigger, id), not the primary key past every other event
    with db.unit_of_work(engine) as session:
        statement = sql.raw("events_newest_first")
        plan = session.execute(
            text(f"EXPLAIN (FORMAT JSON) {statement}"),
            {"trigger": "rare", "before": 50_000, "limit": 51},
        ).scalar_one()
        page, following = queries.events(session, "rare", 50, 50_000)
    assert "ix_events_trigger_id" in json.dumps(plan)
    assert len(page) == expected < 50 and following is None
    assert {e["trigger"] for e in page} == {"rare"}


@pytest.mark.usefixtures("cli_env")
def test_usher_events_list_table_and_json(
    engine: Engine, settings: config.Settings, pack: str
) -> None:
    alert = _store(engine, f"{pack}.alert")
    _process(engine, settings, alert)
    pending = _store(engine, f"{pack}.other")
    # The JSON is the API's answer
    listed = json.loads(usher("events", "list", "--trigger", f"{pack}.alert", "--json"))
    schemas.Events.model_validate(listed)
    assert [i["id"] for i in listed["items"]] == [alert] and listed["next"] is None
    assert len(listed["items"][0]["enforcements"]) == 3
    # The table: one aligned row per event, with a summary of its enforcements and its state
    out = usher("events", "list")
    rows = [line for line in out.splitlines() if pack in line]
    assert len(rows) == 2
    assert str(pending) in rows[0] and "pending" in rows[0]
    assert str(alert) in rows[1] and "processed" in rows[1]
    assert "1 executed, 1 rejected, 1 skipped" in rows[1]
    assert rows[0].index("│", 2) == rows[1].index("│", 2)
    header = next(line for line in out.splitlines() if "trigger" in line)
    for column in ("id", "received", "trigger", "enforcements", "state"):
        assert column in header
    # Paging and its bounds
    paged = usher("events", "list", "--limit", "1")
    assert f"older: --before {pending}" in paged
    older = json.loads(usher("events", "list", "--limit", "1", "--before", str(pending), "--json"))
    assert [i["id"] for i in older["items"]] == [alert]
    refused = CliRunner().invoke(cli.main, ["events", "list", "--limit", "501"])
    assert refused.exit_code == 2 and "501" in refused.output
