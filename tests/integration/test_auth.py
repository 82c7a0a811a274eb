"""Auth over every route of the URL map: 401 without a token, 403 read-only on writes; failed
attempts throttled per address; dashboard sessions kept (and ended) in Postgres."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import Engine, text

import web
from app import cli, config, db, tokens
from tests.support.flow import wait_until
from web import api

pytestmark = pytest.mark.timeout(120)


ADMIN = "auth-admin-token-for-tests"


@pytest.fixture
def app(settings: config.Settings, celery_app: Any) -> Flask:
    # Walking every route with a wrong token fails more often than the throttle allows.
    update = {"auth_failures_per_minute": 10_000, "api_token": ADMIN, "insecure_cookies": True}
    return web.create_app(settings.model_copy(update=update), celery_app)


@pytest.fixture
def strict(settings: config.Settings, celery_app: Any) -> Flask:
    """Three failures a minute per address."""
    update = {"auth_failures_per_minute": 3, "api_token": ADMIN, "insecure_cookies": True}
    return web.create_app(settings.model_copy(update=update), celery_app)


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
    # Revoked by another process (the CLI's): this one honours it within the seconds it
    # trusts a token it checked (web.api.TOKEN_CHECK_S)
    wait_until(
        lambda: client.get("/api/v1/actions", headers=headers).status_code == 401,
        api.TOKEN_CHECK_S + 10,
        what="the revoked token to be refused",
    )
    again = runner.invoke(cli.main, ["tokens", "create", "ci"])
    assert again.exit_code != 0


def _login(client: Any, token: str, next_page: str = "/") -> Any:
    form = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert csrf
    return client.post(
        "/login", data={"token": token, "csrf_token": csrf.group(1), "next": next_page}
    )


def _cookie(client: Any) -> str:
    cookie = client.get_cookie("usher_session")
    assert cookie is not None
    return str(cookie.value)


def test_a_session_lives_in_postgres_and_its_cookie_holds_no_token_hash(
    app: Flask, engine: Engine
) -> None:
    with db.unit_of_work(engine) as session:
        token = tokens.create(session, "operator")
    client = app.test_client()
    assert _login(client, token).status_code == 303
    cookie = _cookie(client)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT token_hash FROM api_tokens")).scalar_one()
        row = conn.execute(
            text("""SELECT token_name, nonce_hash, ended_at,
                           expires_at - created_at AS lifetime FROM web_sessions""")
        ).one()
    assert row.token_name == "operator" and row.ended_at is None
    assert row.lifetime.total_seconds() == 12 * 3600
    from itsdangerous import URLSafeTimedSerializer

    # Flask's cookie is signed, not encrypted: what it carries is readable
    loaded = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    assert isinstance(loaded, URLSafeTimedSerializer)
    content = loaded.loads(cookie)
    assert stored not in json.dumps(content) and token not in json.dumps(content)
    assert tokens.digest(content["nonce"]) == row.nonce_hash
    assert client.get("/").status_code == 200


def test_logging_out_ends_the_session_for_a_replayed_cookie(app: Flask, engine: Engine) -> None:
    client = app.test_client()
    assert _login(client, ADMIN).status_code == 303
    stolen = _cookie(client)
    form = client.get("/logout").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert csrf
    assert client.post("/logout", data={"csrf_token": csrf.group(1)}).status_code == 303
    with engine.connect() as conn:
        assert conn.execute(text("SELECT ended_at FROM web_sessions")).scalar_one() is not None
    replay = app.test_client()
    replay.set_cookie("usher_session", stolen)
    assert replay.get("/").status_code == 302
    assert replay.get("/ui/overview.json").status_code == 401


def test_an_expired_session_or_a_changed_admin_token_is_refused(
    app: Flask, engine: Engine, settings: config.Settings, celery_app: Any
) -> None:
    client = app.test_client()
    assert _login(client, ADMIN).status_code == 303
    assert client.get("/").status_code == 200
    cookie = _cookie(client)
    rotated = web.create_app(
        settings.model_copy(update={"api_token": "another-admin-token", "insecure_cookies": True}),
        celery_app,
    ).test_client()
    rotated.set_cookie("usher_session", cookie)
    assert rotated.get("/").status_code == 302  # the token it was opened with is gone
    with engine.begin() as conn:
        conn.execute(text("UPDATE web_sessions SET expires_at = now() - interval '1 second'"))
    assert client.get("/").status_code == 302


def test_a_token_made_again_under_a_revoked_name_opens_no_old_session(
    app: Flask, engine: Engine
) -> None:
    with db.unit_of_work(engine) as session:
        first = tokens.create(session, "rotating")
    client = app.test_client()
    assert _login(client, first).status_code == 303
    with db.unit_of_work(engine) as session:
        tokens.revoke(session, "rotating")
        session.execute(text("DELETE FROM api_tokens WHERE name = 'rotating'"))
        tokens.create(session, "rotating")
    assert client.get("/").status_code == 302


def test_session_cookies_are_secure_unless_insecure_cookies_is_set(
    settings: config.Settings, celery_app: Any
) -> None:
    secure = web.create_app(settings.model_copy(update={"api_token": ADMIN}), celery_app)
    assert secure.config["SESSION_COOKIE_SECURE"] is True
    https = secure.test_client()
    https.environ_base["wsgi.url_scheme"] = "https"
    logged_in = _login(https, ADMIN)
    assert "Secure" in logged_in.headers["Set-Cookie"]
    update = {"api_token": ADMIN, "insecure_cookies": True}
    plain = web.create_app(settings.model_copy(update=update), celery_app)
    assert plain.config["SESSION_COOKIE_SECURE"] is False


def test_failed_bearer_tokens_are_throttled_per_address(
    strict: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    client = strict.test_client()
    good, bad = {"Authorization": f"Bearer {ADMIN}"}, {"Authorization": "Bearer guess-1234"}
    # Missing tokens and successes do not count
    for _ in range(5):
        assert client.get("/api/v1/actions").status_code == 401
        assert client.get("/api/v1/actions", headers=good).status_code == 200
    with caplog.at_level(logging.WARNING, logger="web"):
        for _ in range(3):
            assert client.get("/api/v1/executions", headers=bad).status_code == 401
    failures = [r.getMessage() for r in caplog.records if r.name == "web"]
    assert failures == ["failed authentication from 127.0.0.1 on '/api/v1/executions'"] * 3
    assert all("guess" not in line for line in caplog.text.splitlines())
    # The fourth attempt is refused whatever it carries, with the time to wait
    for headers in (bad, good):
        refused = client.post("/api/v1/events", json={"trigger": "x"}, headers=headers)
        assert refused.status_code == 429
        error = refused.get_json()["error"]
        assert error["code"] == "too_many_auth_failures" and "3 a minute" in error["message"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # Another address is not concerned; the description and /healthz stay open
    other = strict.test_client()
    other.environ_base["REMOTE_ADDR"] = "10.0.0.2"
    assert other.get("/api/v1/actions", headers=good).status_code == 200
    assert client.get("/api/v1/openapi.json").status_code == 200
    assert client.get("/healthz").status_code == 200


def test_the_throttle_ends_with_its_window(strict: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    from limits.storage import memory

    client = strict.test_client()
    bad, good = {"Authorization": "Bearer guess-1234"}, {"Authorization": f"Bearer {ADMIN}"}
    for _ in range(3):
        assert client.get("/api/v1/actions", headers=bad).status_code == 401
    assert client.get("/api/v1/actions", headers=good).status_code == 429

    class Later:
        @staticmethod
        def time() -> float:
            return time.time() + 61

    monkeypatch.setattr(memory, "time", Later)
    assert client.get("/api/v1/actions", headers=good).status_code == 200


def test_failed_logins_share_the_throttle_and_get_the_error_page(
    strict: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    client = strict.test_client()
    assert client.get("/api/v1/actions", headers={"Authorization": "Bearer x"}).status_code == 401
    with caplog.at_level(logging.WARNING, logger="web"):
        for _ in range(2):
            assert _login(client, "not-the-token").status_code == 401
    assert "failed authentication from 127.0.0.1 on '/login'" in caplog.text
    refused = _login(client, ADMIN)
    assert refused.status_code == 429 and "text/html" in refused.content_type
    assert "too many failed authentications" in refused.get_data(as_text=True)
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert client.get("/login").status_code == 200  # looking at the form is not an attempt
    assert (
        client.get("/api/v1/actions", headers={"Authorization": f"Bearer {ADMIN}"}).status_code
        == 429
    )


def test_an_ipv6_client_is_throttled_as_its_64_and_proxies_can_be_trusted(
    settings: config.Settings, celery_app: Any
) -> None:
    update = {"auth_failures_per_minute": 3, "api_token": ADMIN, "insecure_cookies": True}
    bad = {"Authorization": "Bearer guess-1234"}
    client = web.create_app(settings.model_copy(update=update), celery_app).test_client()
    # Each failure from another address of one /64
    for suffix in range(1, 4):
        client.environ_base["REMOTE_ADDR"] = f"2001:db8:1:2::{suffix}"
        assert client.get("/api/v1/actions", headers=bad).status_code == 401
    client.environ_base["REMOTE_ADDR"] = "2001:db8:1:2::99"
    assert client.get("/api/v1/actions", headers=bad).status_code == 429
    # Behind one trusted proxy, clients are told apart by X-Forwarded-For
    proxied = settings.model_copy(update={**update, "trusted_proxies": 1})
    client = web.create_app(proxied, celery_app).test_client()
    for _ in range(3):
        forwarded = {**bad, "X-Forwarded-For": "192.0.2.7"}
        assert client.get("/api/v1/actions", headers=forwarded).status_code == 401
    assert (
        client.get("/api/v1/actions", headers={**bad, "X-Forwarded-For": "192.0.2.7"}).status_code
        == 429
    )
    good = {"Authorization": f"Bearer {ADMIN}", "X-Forwarded-For": "192.0.2.8"}
    assert client.get("/api/v1/actions", headers=good).status_code == 200


def test_a_token_revoked_through_this_api_is_refused_at_once(client: Any, engine: Engine) -> None:
    with db.unit_of_work(engine) as session:
        token = tokens.create(session, "brief")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/actions", headers=headers).status_code == 200  # now trusted
    admin = {"Authorization": f"Bearer {ADMIN}"}
    assert client.post("/api/v1/tokens/brief/revoke", headers=admin).status_code == 200
    assert client.get("/api/v1/actions", headers=headers).status_code == 401
