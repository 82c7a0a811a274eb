"""Who did what (``app.audit``): an audit row for every mutating route of the URL map, the
requester and canceller of executions (a token, a rule, a schedule, the CLI), a read-only
token's refusal recorded, and the audit's listings (API, CLI, dashboard)."""

from __future__ import annotations

import getpass
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from app import cli, config, db, tokens
from policies import events, schedules
from tests.integration.test_schedules import load, next_fire_at, write_pack
from tests.support import api

pytestmark = pytest.mark.timeout(120)
TOKEN = api.TOKEN  # the token of the folder's settings (tests/support/api.py)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN = tokens.ADMIN_NAME
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def settings(dashboard_settings: config.Settings) -> config.Settings:
    """The API's token, with session cookies over http:// (``app`` and ``client`` are the
    folder's, tests/integration/conftest.py)."""
    return dashboard_settings


@pytest.fixture
def pack(engine: Engine, tmp_path: Path) -> str:
    """An action ``job``, a rule ``run`` on ``<pack>.alert`` and a schedule ``tick`` of it."""
    directory = write_pack(tmp_path, {"tick": {"every_s": 60, "action": "PACK.job"}})
    name = directory.name
    schedule = directory / "schedules" / "tick.yaml"
    schedule.write_text(schedule.read_text().replace("PACK", name))
    (directory / "actions" / "a.yaml").unlink()
    (directory / "actions" / "job.yaml").write_text(json.dumps({"name": "job", "runner": "noop"}))
    rule = {"name": "run", "trigger": f"{name}.alert", "action": f"{name}.job", "parameters": {}}
    (directory / "rules" / "run.yaml").write_text(json.dumps(rule))
    return load(engine, directory)


def audit_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT * FROM audit ORDER BY id")).all())


def execution(engine: Engine, execution_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT requested_by, cancelled_by FROM executions WHERE id = :id"),
            {"id": execution_id},
        ).one()


def submit(client: FlaskClient, action: str, headers: dict[str, str] = AUTH) -> int:
    response = client.post("/api/v1/executions", json={"action": action}, headers=headers)
    assert response.status_code == 202, response.get_data(as_text=True)
    return int(response.get_json()["id"])


def logged_in(app: Flask, token: str) -> FlaskClient:
    client = app.test_client()
    data = {"token": token, "csrf_token": csrf(client, "/login"), "next": "/"}
    assert client.post("/login", data=data).status_code == 303
    return client


def csrf(client: FlaskClient, path: str = "/audit") -> str:
    found = CSRF.search(client.get(path).get_data(as_text=True))
    assert found, path
    return found.group(1)


def _path(rule: Any, pack: str) -> str:
    values = {
        name: 999_999 if name.endswith("_id") else f"{pack}.nothing" for name in rule.arguments
    }
    return str(rule.rule) if not values else _build(rule, values)


def _build(rule: Any, values: dict[str, Any]) -> str:
    built = rule.rule
    for name, value in values.items():
        built = re.sub(rf"<(?:[a-z]+:)?{name}>", str(value), built)
    return str(built)


def test_every_mutating_route_leaves_an_audit_row_naming_its_actor(
    app: Flask, engine: Engine, pack: str
) -> None:
    # Given every rule of the URL map with a mutating method under /api/v1, the dashboard
    # and /hooks (the dashboard's logout last: it ends the session)
    routes = [
        (rule, method)
        for rule in app.url_map.iter_rules()
        for method in sorted((rule.methods or set()) & MUTATING)
        if rule.endpoint.split(".")[0] in ("api", "dashboard", "hooks")
    ]
    routes.sort(key=lambda r: r[0].endpoint in ("dashboard.login", "dashboard.logout"))
    assert {r.endpoint for r, _ in routes} >= {
        "api.submit_execution",
        "api.cancel_execution",
        "dashboard.cancel",
        "dashboard.logout",
        "hooks.deliver",
    }
    api, ui, anyone = app.test_client(), logged_in(app, TOKEN), app.test_client()
    for rule, method in routes:
        path = _path(rule, pack)
        before = len(audit_rows(engine))
        # When it is asked (refused or not: a 4xx is fine)
        if rule.endpoint.startswith("api."):
            response = api.open(path, method=method, json={}, headers=AUTH)
            actor = ADMIN
        elif rule.endpoint.startswith("hooks."):
            response = anyone.open(path, method=method, json={})
            actor = f"webhook:{pack}.nothing"
        else:
            data = {"csrf_token": csrf(ui), "token": TOKEN, "limit": "1"}
            response = ui.open(path, method=method, data=data)
            actor = ADMIN
        assert response.status_code < 500, (path, response.get_data(as_text=True))
        # Then exactly one audit row says who asked what, and how it ended
        rows = audit_rows(engine)
        assert len(rows) == before + 1, (method, path)
        row = rows[-1]
        assert (row.actor, row.verb, row.target) == (actor, rule.endpoint, path)
        assert row.outcome.split()[0] == str(response.status_code)
        assert row.detail == {"method": method, "status": response.status_code}
        if rule.endpoint == "dashboard.cancel":  # refused with a message on the page
            assert row.outcome == "303 unknown_execution"


def test_a_read_only_tokens_refused_mutation_leaves_its_refusal(
    client: FlaskClient, engine: Engine, pack: str
) -> None:
    # Given a read-only token
    with db.unit_of_work(engine) as session:
        token = tokens.create(session, "watcher", read_only=True)
    # When it asks for an execution
    response = client.post(
        "/api/v1/executions",
        json={"action": f"{pack}.job", "parameters": {"password": "hunter2"}},
        headers={"Authorization": f"Bearer {token}"},
    )
    # Then it is refused, and the refusal is recorded under its name, without the body
    assert response.status_code == 403
    (row,) = audit_rows(engine)
    assert (row.actor, row.verb, row.target) == (
        "watcher",
        "api.submit_execution",
        "/api/v1/executions",
    )
    assert row.outcome == "403 forbidden"
    assert "hunter2" not in json.dumps(row.detail)
    # And an invalid token's is recorded too, as anonymous
    client.post("/api/v1/dlq/purge", headers={"Authorization": "Bearer nope"})
    assert audit_rows(engine)[-1].actor == "anonymous"
    assert audit_rows(engine)[-1].outcome == "401 unauthorized"
    # And the read-only token may read the audit
    listed = client.get("/api/v1/audit", headers={"Authorization": f"Bearer {token}"})
    assert listed.status_code == 200
    assert [i["actor"] for i in listed.get_json()["items"]] == ["anonymous", "watcher"]


def test_executions_carry_their_requester_and_canceller(
    client: FlaskClient, engine: Engine, settings: config.Settings, pack: str
) -> None:
    # Given a named admin token
    with db.unit_of_work(engine) as session:
        deployer = tokens.create(session, "deployer")
    by_deployer = {"Authorization": f"Bearer {deployer}"}
    # When it and the admin token request executions, and the admin token cancels one
    mine = submit(client, f"{pack}.job", by_deployer)
    theirs = submit(client, f"{pack}.job")
    batch = client.post(
        "/api/v1/executions/batch", json={"items": [{"action": f"{pack}.job"}]}, headers=by_deployer
    ).get_json()["items"][0]["id"]
    cancelled = client.post(f"/api/v1/executions/{mine}/cancel", headers=AUTH)
    # Then each names who asked, and the cancel who cancelled
    assert execution(engine, mine) == ("deployer", ADMIN)
    assert execution(engine, theirs) == (ADMIN, None)
    assert execution(engine, batch) == ("deployer", None)
    shown = client.get(f"/api/v1/executions/{mine}", headers=AUTH).get_json()
    assert (shown["requested_by"], shown["cancelled_by"]) == ("deployer", ADMIN)
    assert cancelled.get_json()["cancelled_by"] == ADMIN
    listed = client.get("/api/v1/executions", headers=AUTH).get_json()["items"]
    assert {i["id"]: i["requested_by"] for i in listed}[batch] == "deployer"


def test_a_rules_and_a_schedules_executions_name_them(
    engine: Engine, settings: config.Settings, pack: str
) -> None:
    # Given an event of the rule's trigger, and the schedule due
    with db.unit_of_work(engine) as session:
        event_id = events.store(session, f"{pack}.alert", {})
    # When the event is processed and the schedule fires
    with db.unit_of_work(engine) as session:
        (enforced,) = events.process(session, settings, event_id).enforcements
    with db.unit_of_work(engine) as session:
        fired = schedules.fire_due(session, settings, now=next_fire_at(engine, f"{pack}.tick"))
    (fire,) = fired.fires
    # Then the rule's execution says rule:<ref>, the schedule's schedule:<ref>
    assert enforced.execution_id is not None
    assert execution(engine, enforced.execution_id).requested_by == f"rule:{pack}.run"
    assert fire.enforcement is not None and fire.enforcement.execution_id is not None
    assert execution(engine, fire.enforcement.execution_id).requested_by == f"schedule:{pack}.tick"


@pytest.mark.usefixtures("cli_env")
def test_the_cli_records_its_mutations_and_lists_the_audit(engine: Engine, pack: str) -> None:
    runner = CliRunner()
    me = f"cli:{getpass.getuser()}"
    # When the CLI runs an execution, cancels it, and is refused a cancel of what is over
    ran = runner.invoke(cli.main, ["run", f"{pack}.job", "secret=s3cr3t"], catch_exceptions=False)
    execution_id = int(ran.stdout.strip())
    runner.invoke(cli.main, ["executions", "cancel", str(execution_id)], catch_exceptions=False)
    again = runner.invoke(cli.main, ["executions", "cancel", str(execution_id)])
    assert again.exit_code != 0
    # Then the execution names the CLI's user as requester and canceller
    assert execution(engine, execution_id) == (me, me)
    # And the audit lists the three, newest first, as the API's requests the commands made,
    # without the parameters' values
    listed = runner.invoke(cli.main, ["audit", "list", "--json"], catch_exceptions=False)
    items = json.loads(listed.stdout)["items"]
    cancel = f"/api/v1/executions/{execution_id}/cancel"
    assert [(i["actor"], i["verb"], i["target"], i["outcome"]) for i in items] == [
        (me, "api.cancel_execution", cancel, "409 already_finished"),
        (me, "api.cancel_execution", cancel, "200"),
        (me, "api.submit_execution", "/api/v1/executions", "202"),
    ]
    assert "s3cr3t" not in listed.stdout
    table = runner.invoke(cli.main, ["audit", "list", "--limit", "1"], catch_exceptions=False)
    assert "api.cancel_execution" in table.stdout and "submit" not in table.stdout


def test_the_audit_pages_newest_first_in_the_api_and_the_dashboard(
    app: Flask, client: FlaskClient, engine: Engine, pack: str
) -> None:
    # Given three mutations
    for _ in range(3):
        client.post("/api/v1/dlq/purge", headers=AUTH)
    # When the audit is read two at a time
    first = client.get("/api/v1/audit?limit=2", headers=AUTH).get_json()
    second = client.get(f"/api/v1/audit?limit=2&before={first['next']}", headers=AUTH).get_json()
    # Then it comes newest first, by cursor
    ids = [i["id"] for i in first["items"] + second["items"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 3 and second["next"] is None
    assert first["items"][0]["verb"] == "api.purge_dlq"
    assert first["items"][0]["outcome"] == "200"
    # And the dashboard's Audit page shows them (and the login that opened it)
    page = logged_in(app, TOKEN).get("/audit").get_data(as_text=True)
    assert page.count("api.purge_dlq") == 3 and "dashboard.login" in page


@pytest.mark.usefixtures("cli_env")
def test_the_clis_rule_switches_are_recorded(engine: Engine, pack: str) -> None:
    # When a rule is disabled and an unknown one enabled
    runner = CliRunner()
    runner.invoke(cli.main, ["rules", "disable", f"{pack}.run"], catch_exceptions=False)
    assert runner.invoke(cli.main, ["rules", "enable", f"{pack}.nope"]).exit_code != 0
    # Then both are in the audit, the second as refused
    rows = audit_rows(engine)
    assert [(r.verb, r.target, r.outcome) for r in rows] == [
        ("api.disable_rule", f"/api/v1/rules/{pack}.run/disable", "200"),
        ("api.enable_rule", f"/api/v1/rules/{pack}.nope/enable", "404 unknown_rule"),
    ]
