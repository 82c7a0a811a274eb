"""The catalog against a real Postgres, no workers: ``usher packs list``, ``usher actions
list|show``, ``usher rules list|show|enable|disable``; ``GET /api/v1/packs``,
``GET /api/v1/rules[/<ref>]``, ``POST /api/v1/rules/<ref>/enable|disable``; a disabled rule's
events skipped, execution events switched by a rule on usher.execution; the rules page."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

import web
from app import cli, config, db, tokens
from app.cli.client import ApiError
from app.errors import UnknownRule
from policies import events, rules
from policies import packs as app_packs
from web import catalog_schemas

pytestmark = pytest.mark.timeout(90)
ADMIN = "admin-token-for-catalog-tests"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PACK = "cat"
FILES: dict[str, dict[str, Any]] = {
    "pack.yaml": {"name": PACK, "description": "Catalog tests.", "policy": {"concurrency": 3}},
    "actions/note.yaml": {
        "name": "note",
        "runner": "noop",
        "parameters": {"type": "object", "properties": {"host": {"type": "string"}}},
        "policy": {"rate_limit": {"count": 5, "per_s": 60}, "retry": {"max_retries": 1}},
    },
    "rules/on_alert.yaml": {
        "name": "on_alert",
        "trigger": "cat.alert",
        "criteria": {"payload.severity": {"eq": "high"}},
        "action": "cat.note",
        "parameters": {"host": "{{ event.payload.host }}"},
    },
    "rules/chain.yaml": {
        "name": "chain",
        "trigger": "usher.execution",
        "criteria": {"payload.action": {"eq": "cat.other"}},
        "action": "cat.note",
        "enabled": False,
    },
    "schedules/hourly.yaml": {"name": "hourly", "every_s": 3600, "action": "cat.note"},
}


@pytest.fixture
def settings(db_url: str, broker_url: str | None, tmp_path: Path) -> config.Settings:
    return config.load(
        database_url=db_url,
        broker_url=broker_url,
        home=tmp_path / "home",
        api_token=ADMIN,
        insecure_cookies=True,
    )


def _load(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / PACK
    for name, document in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(yaml.safe_dump(document))
    with db.unit_of_work(engine) as session:
        app_packs.load(session, root)


@pytest.fixture
def loaded(engine: Engine, tmp_path: Path) -> None:
    _load(engine, tmp_path)


def _emitting(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(text("SELECT usher_execution_events_enabled()")).scalar_one())


def _alert(engine: Engine, settings: config.Settings) -> list[tuple[str, str, str | None]]:
    with db.unit_of_work(engine) as session:
        event_id = events.store(session, "cat.alert", {"severity": "high", "host": "db3"})
        done = events.process(session, settings, event_id)
    return [(e.rule, e.status, e.reason) for e in done.enforcements]


# --- the command line ---------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, settings: config.Settings) -> None:
    for name in list(os.environ):
        if name.startswith("USHER_"):
            monkeypatch.delenv(name)
    assert settings.database_url
    monkeypatch.setenv("USHER_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("USHER_HOME", str(settings.home))


def usher(*args: str) -> str:
    result = CliRunner().invoke(cli.main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def _row(table: str, first: str) -> str:
    return next(line for line in table.splitlines() if first in line)


@pytest.mark.usefixtures("cli_env", "loaded")
def test_usher_packs_and_actions_list_and_show(settings: config.Settings) -> None:
    (pack,) = json.loads(usher("packs", "list", "--json"))["items"]
    assert {k: v for k, v in pack.items() if k != "updated_at"} == {
        "name": PACK,
        "description": "Catalog tests.",
        "actions": 1,
        "rules": 2,
        "schedules": 1,
        "webhooks": 0,
    }
    row = _row(usher("packs", "list"), "Catalog tests.")
    assert re.search(r"│ cat\s+│ Catalog tests\.\s+│\s+1\s+│\s+2\s+│\s+1\s+│\s+0\s+│", row), row
    (action,) = json.loads(usher("actions", "list", "--json"))["items"]
    assert (action["ref"], action["runner"], action["queue_stats"]["max_concurrent"]) == (
        "cat.note",
        "noop",
        3,
    )
    assert re.search(r"cat\.note\s+│ noop\s+│ 3\s+│\s+0\s+│\s+0\s+│", usher("actions", "list"))
    shown = json.loads(usher("actions", "show", "cat.note", "--json"))
    resolved = shown["resolved"]
    assert (resolved["concurrency"], resolved["max_queue_length"]) == (
        3,
        settings.default_max_queue_length,
    )
    assert resolved["rate_limit"] == [{"count": 5, "per_s": 60.0}]
    assert resolved["retry"]["max_retries"] == 1
    assert resolved["retry"]["strategy"] == settings.retry_strategy.value
    assert shown["parameters"]["properties"] == {"host": {"type": "string"}}
    assert shown["queue_stats"]["total_enqueued"] == 0 and shown["paused"] is False
    table = usher("actions", "show", "cat.note")
    assert re.search(r"│ concurrency\s+│ 3\s+│", table), table
    assert re.search(r"│ rate_limit\s+│ 5 per 60 s\s+│", table), table


@pytest.mark.usefixtures("cli_env", "loaded")
def test_usher_rules_list_show_enable_and_disable(
    engine: Engine, settings: config.Settings
) -> None:
    assert _alert(engine, settings) == [("cat.on_alert", "executed", None)]
    listed = json.loads(usher("rules", "list", "--json"))["items"]
    assert [(r["ref"], r["trigger"], r["action"], r["enabled"]) for r in listed] == [
        ("cat.chain", "usher.execution", "cat.note", False),
        ("cat.on_alert", "cat.alert", "cat.note", True),
    ]
    assert listed[1]["recent_enforcements"] == {"executed": 1}
    assert listed[0]["recent_enforcements"] == {} and listed[0]["last_enforced_at"] is None
    only = json.loads(usher("rules", "list", "--trigger", "cat.alert", "--json"))["items"]
    assert [r["ref"] for r in only] == ["cat.on_alert"]
    table = usher("rules", "list")
    assert re.search(r"cat\.on_alert\s+│ cat\.alert\s+│ cat\.note\s+│ yes\s+│ executed 1", table)
    assert re.search(r"cat\.chain\s+│ usher\.execution\s+│ cat\.note\s+│ no\s+│ -", table)
    shown = json.loads(usher("rules", "show", "cat.on_alert", "--json"))
    assert shown == listed[1]
    assert shown["criteria"] == {"payload.severity": {"eq": "high"}}
    assert re.search(
        r"│ parameters\s+│ \{\"host\": \"\{\{ event\.payload\.host \}\}\"\}",
        usher("rules", "show", "cat.on_alert"),
    )
    said = usher("rules", "disable", "cat.on_alert")
    assert "cat.on_alert: disabled (its events are skipped) until its pack is loaded again" in said
    assert json.loads(usher("rules", "show", "cat.on_alert", "--json"))["enabled"] is False
    assert "enabled until" in usher("rules", "enable", "cat.on_alert")
    with pytest.raises(
        ApiError, match=r"no rule named 'cat\.on_alrt'; did you mean cat\.on_a"
    ) as no:
        CliRunner().invoke(cli.main, ["rules", "enable", "cat.on_alrt"], catch_exceptions=False)
    assert (no.value.status, no.value.code, no.value.exit_code) == (404, UnknownRule.code, 1)


# --- the policy: skipped while disabled, execution events switched, a load resets -----------------


@pytest.mark.usefixtures("loaded")
def test_a_disabled_rule_skips_its_events_and_enabled_again_executes(
    engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    with db.unit_of_work(engine) as session:
        assert rules.set_enabled(session, "cat.on_alert", False)["enabled"] is False
    assert _alert(engine, settings) == [("cat.on_alert", "skipped", "the rule is disabled")]
    with db.unit_of_work(engine) as session:
        rules.set_enabled(session, "cat.on_alert", True)
    assert _alert(engine, settings) == [("cat.on_alert", "executed", None)]
    with db.unit_of_work(engine) as session:
        counts = rules.show(session, "cat.on_alert")["recent_enforcements"]
        rules.set_enabled(session, "cat.on_alert", False)
    assert counts == {"executed": 1, "skipped": 1}
    # A load of the pack sets enabled from the file again
    _load(engine, tmp_path)
    with db.unit_of_work(engine) as session:
        assert rules.show(session, "cat.on_alert")["enabled"] is True


@pytest.mark.usefixtures("loaded")
def test_enabling_a_rule_on_usher_execution_switches_execution_events(
    engine: Engine, tmp_path: Path
) -> None:
    assert _emitting(engine) is False
    with db.unit_of_work(engine) as session:
        rules.set_enabled(session, "cat.chain", True)
    assert _emitting(engine) is True
    with db.unit_of_work(engine) as session:
        rules.set_enabled(session, "cat.chain", True)  # again: nothing changes
    assert _emitting(engine) is True
    with db.unit_of_work(engine) as session:
        rules.set_enabled(session, "cat.chain", False)
    assert _emitting(engine) is False
    with db.unit_of_work(engine) as session:
        rules.set_enabled(session, "cat.chain", True)
    _load(engine, tmp_path)  # the file says enabled: false
    assert _emitting(engine) is False


# --- the API ------------------------------------------------------------------------------------


@pytest.fixture
def client(settings: config.Settings, celery_app: Any) -> FlaskClient:
    return web.create_app(settings, celery_app).test_client()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.usefixtures("loaded")
def test_the_api_lists_shows_enables_and_disables_rules(
    client: FlaskClient, engine: Engine
) -> None:
    with db.unit_of_work(engine) as session:
        reader = tokens.create(session, "reader", True)
    packs = client.get("/api/v1/packs", headers=_bearer(reader))
    assert packs.status_code == 200
    (pack,) = catalog_schemas.Packs.model_validate(packs.get_json()).items
    assert (pack.name, pack.actions, pack.rules, pack.schedules) == (PACK, 1, 2, 1)
    listed = client.get("/api/v1/rules", headers=_bearer(reader))
    assert listed.status_code == 200
    items = catalog_schemas.Rules.model_validate(listed.get_json()).items
    assert [(r.ref, r.enabled) for r in items] == [("cat.chain", False), ("cat.on_alert", True)]
    of = client.get("/api/v1/rules?trigger=usher.execution", headers=_bearer(reader)).get_json()
    assert [r["ref"] for r in of["items"]] == ["cat.chain"]
    shown = client.get("/api/v1/rules/cat.on_alert", headers=_bearer(reader))
    assert shown.status_code == 200 and shown.get_json() == listed.get_json()["items"][1]
    assert client.get("/api/v1/rules").status_code == 401
    missing = client.get("/api/v1/rules/cat.on_alrt", headers=_bearer(reader))
    assert missing.status_code == 404
    error = missing.get_json()["error"]
    assert error["code"] == "unknown_rule"
    assert error["message"].startswith("no rule named 'cat.on_alrt'; did you mean cat.on_alert")
    # A switch needs an admin token
    forbidden = client.post("/api/v1/rules/cat.on_alert/disable", headers=_bearer(reader))
    assert forbidden.status_code == 403 and forbidden.get_json()["error"]["code"] == "forbidden"
    disabled = client.post("/api/v1/rules/cat.on_alert/disable", headers=_bearer(ADMIN))
    assert disabled.status_code == 200
    assert catalog_schemas.Rule.model_validate(disabled.get_json()).enabled is False
    enabled = client.post("/api/v1/rules/cat.on_alert/enable", headers=_bearer(ADMIN))
    assert enabled.status_code == 200 and enabled.get_json()["enabled"] is True
    unknown = client.post("/api/v1/rules/cat.nope/enable", headers=_bearer(ADMIN))
    assert unknown.status_code == 404 and unknown.get_json()["error"]["code"] == "unknown_rule"
    # The action's page carries its policy as resolved
    action = client.get("/api/v1/actions/cat.note", headers=_bearer(reader))
    detail = catalog_schemas.ActionDetail.model_validate(action.get_json())
    assert (detail.resolved.concurrency, detail.resolved.retry.max_retries) == (3, 1)


# --- the dashboard ------------------------------------------------------------------------------


def _session(settings: config.Settings, celery_app: Any, token: str) -> FlaskClient:
    client = web.create_app(settings, celery_app).test_client()
    data = {"token": token, "csrf_token": _csrf(client, "/login"), "next": "/"}
    assert client.post("/login", data=data).status_code == 303
    return client


def _csrf(client: FlaskClient, path: str) -> str:
    found = CSRF.search(client.get(path).get_data(as_text=True))
    assert found, path
    return found.group(1)


def _rows(html: str) -> dict[str, str]:
    return {
        m.group(1): m.group(0) for m in re.finditer(r'<tr data-rule="([^"]+)">.*?</tr>', html, re.S)
    }


@pytest.mark.usefixtures("loaded")
def test_the_rules_page_lists_packs_and_rules_and_an_admin_switches_a_rule(
    engine: Engine, settings: config.Settings, celery_app: Any
) -> None:
    _alert(engine, settings)
    client = _session(settings, celery_app, ADMIN)
    page = client.get("/rules").get_data(as_text=True)
    assert '<tr data-pack="cat">' in page and "Catalog tests." in page
    row = _rows(page)["cat.on_alert"]
    assert "cat.alert" in row and "s-succeeded" in row and "executed 1" in row
    assert 'data-testid="disable-cat.on_alert"' in row and "data-confirm=" in row
    assert 'data-testid="enable-cat.chain"' in _rows(page)["cat.chain"]
    token = _csrf(client, "/rules")
    assert client.post("/rules/cat.on_alert/disable").status_code == 400  # no CSRF token
    done = client.post("/rules/cat.on_alert/disable", data={"csrf_token": token, "next": "/rules"})
    assert done.status_code == 303 and done.headers["Location"] == "/rules"
    page = client.get("/rules").get_data(as_text=True)
    assert "Rule cat.on_alert disabled" in page
    assert 'data-testid="enable-cat.on_alert"' in _rows(page)["cat.on_alert"]
    with db.unit_of_work(engine) as session:
        assert rules.show(session, "cat.on_alert")["enabled"] is False
    only = client.get("/rules?trigger=usher.execution").get_data(as_text=True)
    assert list(_rows(only)) == ["cat.chain"]


@pytest.mark.usefixtures("loaded")
def test_a_read_only_session_sees_the_rules_and_cannot_switch_one(
    engine: Engine, settings: config.Settings, celery_app: Any
) -> None:
    with db.unit_of_work(engine) as session:
        reader = tokens.create(session, "reader", True)
    client = _session(settings, celery_app, reader)
    html = client.get("/rules").get_data(as_text=True)
    assert re.search(
        r'data-testid="disable-cat\.on_alert"\s+disabled title="read-only token"', html
    )
    token = _csrf(client, "/rules")
    assert client.post("/rules/cat.on_alert/disable", data={"csrf_token": token}).status_code == 403
    with db.unit_of_work(engine) as session:
        assert rules.show(session, "cat.on_alert")["enabled"] is True
