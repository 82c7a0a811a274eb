"""Auth over every route of the URL map: 401 without a token, 403 read-only on writes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import Engine, text

import web
from app import cli, config, db, tokens

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def app(settings: config.Settings, celery_app: Any) -> Flask:
    return web.create_app(settings, celery_app)


def _api_routes(app: Flask) -> list[tuple[str, str]]:
    routes = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.rule.endswith("openapi.json"):
            continue
        path = rule.rule
        for argument in rule.arguments:
            path = path.replace(f"<int:{argument}>", "1").replace(f"<path:{argument}>", "x.y")
            path = path.replace(f"<{argument}>", "x")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            routes.append((method, path))
    return routes


def test_every_route_needs_a_token_and_writes_need_an_admin(app: Flask, engine: Engine) -> None:
    with db.unit_of_work(engine) as session:
        reader = tokens.create(session, "reader", read_only=True)
        admin = tokens.create(session, "admin")
    routes = _api_routes(app)
    writes = [(m, p) for m, p in routes if m != "GET"]
    assert len(writes) >= 5  # submit, cancel, events, replay, purge at least
    client = app.test_client()
    for method, path in routes:
        anonymous = client.open(path, method=method, json={})
        assert anonymous.status_code == 401, (method, path)
        assert anonymous.get_json()["error"]["code"] == "unauthorized"
        wrong = client.open(path, method=method, json={}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401, (method, path)
    for method, path in writes:
        refused = client.open(
            path, method=method, json={}, headers={"Authorization": f"Bearer {reader}"}
        )
        assert refused.status_code == 403, (method, path)
        assert refused.get_json()["error"]["code"] == "forbidden"
        allowed = client.open(
            path, method=method, json={}, headers={"Authorization": f"Bearer {admin}"}
        )
        assert allowed.status_code not in (401, 403), (method, path)
    # A reader may read
    ok = client.get("/api/v1/actions", headers={"Authorization": f"Bearer {reader}"})
    assert ok.status_code == 200


def test_tokens_are_stored_hashed_and_can_be_revoked(
    app: Flask, engine: Engine, settings: config.Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USHER_DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("USHER_HOME", str(settings.home))
    runner = CliRunner()
    created = runner.invoke(cli.main, ["tokens", "create", "ci", "--read-only"])
    assert created.exit_code == 0, created.output
    token = created.output.strip().splitlines()[-1]
    assert token.startswith(tokens.PREFIX)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT token_hash FROM api_tokens")).scalar_one()
    assert stored == tokens.digest(token) and token not in stored
    listed = json.loads(runner.invoke(cli.main, ["tokens", "list", "--json"]).output)
    assert [(t["name"], t["read_only"]) for t in listed] == [("ci", True)]
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/actions", headers=headers).status_code == 200
    assert runner.invoke(cli.main, ["tokens", "revoke", "ci"]).exit_code == 0
    assert client.get("/api/v1/actions", headers=headers).status_code == 401
    again = runner.invoke(cli.main, ["tokens", "create", "ci"])
    assert again.exit_code != 0
