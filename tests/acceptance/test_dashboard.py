"""The dashboard: sessions from API tokens, CSRF-protected forms, and the pages in a browser.

No worker runs: executions stay queued or scheduled unless a test claims and releases them
itself, which is what a worker would do.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, text
from werkzeug.test import TestResponse

import web
from app import config, db, tokens
from policies import control
from tests.acceptance.conftest import TOKEN
from tests.acceptance.seed import run, seed, status
from tests.support import flow, packs

pytestmark = pytest.mark.timeout(120)

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


# --- the test client: sessions and CSRF ---------------------------------------------------


def csrf_of(client: FlaskClient, path: str) -> str:
    found = CSRF.search(client.get(path).get_data(as_text=True))
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def login(client: FlaskClient, token: str) -> TestResponse:
    data = {"token": token, "csrf_token": csrf_of(client, "/login"), "next": "/"}
    return client.post("/login", data=data)


def queued_one(engine: Engine, settings: config.Settings, tmp_path: Path) -> tuple[str, int]:
    """A line of one with one execution scheduled and one waiting: returns the waiting one."""
    name = packs.load(engine, tmp_path, [{"name": "job", "runner": "noop"}], {"concurrency": 1})
    ids = flow.submit(engine, settings, None, f"{name}.job", [{}, {}])
    assert status(engine, ids[1])[0] == "queued"
    return f"{name}.job", ids[1]


def counters(engine: Engine, ref: str) -> tuple[int, int]:
    with engine.connect() as conn:
        row = conn.execute(
            text("""SELECT sum(q.queue_length), sum(q.total_cancelled) FROM queues q
                    JOIN actions a ON a.id = q.action_id WHERE a.ref = :ref"""),
            {"ref": ref},
        ).one()
    return int(row[0]), int(row[1])


def test_every_page_needs_a_session(app: Flask) -> None:
    client = app.test_client()
    for path in ["/", "/actions/x.y", "/executions/1", "/dlq", "/events"]:
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.location.startswith("/login?next="), response.location
    refresh = client.get("/ui/overview.json")
    assert refresh.status_code == 401
    assert refresh.get_json()["error"]["code"] == "unauthorized"
    page = client.get("/login")
    assert page.status_code == 200 and 'name="csrf_token"' in page.get_data(as_text=True)


def test_a_bad_token_is_refused(app: Flask) -> None:
    client = app.test_client()
    refused = login(client, "not-a-token")
    assert refused.status_code == 401
    assert "not valid" in refused.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_an_admin_session_cancels_through_the_form(
    app: Flask, engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    ref, waiting = queued_one(engine, settings, tmp_path)
    client = app.test_client()
    # Given an admin session
    logged_in = login(client, TOKEN)
    assert logged_in.status_code == 303 and logged_in.location == "/"
    cookie = logged_in.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert ref in client.get("/").get_data(as_text=True)
    refresh = client.get("/ui/overview.json").get_json()
    assert [row["cells"]["queue_length"] for row in refresh["rows"]] == ["1"]
    # When the cancel form is posted with its CSRF token
    token = csrf_of(client, f"/actions/{ref}")
    back = f"/actions/{ref}"
    done = client.post(f"/executions/{waiting}/cancel", data={"csrf_token": token, "next": back})
    # Then the execution is cancelled and the line's counters moved
    assert done.status_code == 303 and done.location == back
    assert status(engine, waiting)[0] == "cancelled"
    assert counters(engine, ref) == (0, 1)
    assert "cancelled (it was queued)" in client.get(back).get_data(as_text=True)
    # Cancelling it again says why on the page instead of failing
    again = client.post(f"/executions/{waiting}/cancel", data={"csrf_token": token})
    assert again.status_code == 303
    assert "already cancelled" in client.get(again.location).get_data(as_text=True)


def test_a_read_only_session_reads_everything_and_gets_403_on_every_post(
    app: Flask, engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    ref, waiting = queued_one(engine, settings, tmp_path)
    with db.unit_of_work(engine) as session:
        reader = tokens.create(session, "reader", read_only=True)
    client = app.test_client()
    assert login(client, reader).status_code == 303
    for path in ["/", f"/actions/{ref}", f"/executions/{waiting}", "/dlq", "/events"]:
        page = client.get(path)
        assert page.status_code == 200, path
        assert "read-only" in page.get_data(as_text=True)
    assert client.get(f"/ui/actions/{ref}/chart.json").status_code == 200
    token = csrf_of(client, "/")
    for path in [f"/executions/{waiting}/cancel", f"/dlq/{waiting}/replay", "/dlq/purge"]:
        refused = client.post(path, data={"csrf_token": token})
        assert refused.status_code == 403, path
    assert status(engine, waiting)[0] == "queued"
    assert counters(engine, ref) == (1, 0)
    # Logging out is the one thing a reader may post (a GET only asks)
    assert "Log out?" in client.get("/logout").get_data(as_text=True)
    assert client.get("/").status_code == 200
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    assert client.get("/").status_code == 302


def test_a_form_post_without_the_csrf_token_is_refused_and_changes_nothing(
    app: Flask, engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    ref, waiting = queued_one(engine, settings, tmp_path)
    client = app.test_client()
    assert login(client, TOKEN).status_code == 303
    for data in [{}, {"csrf_token": "forged"}]:
        refused = client.post(f"/executions/{waiting}/cancel", data=data)
        assert refused.status_code == 400
        assert "CSRF" in refused.get_data(as_text=True)
    assert client.post("/dlq/purge").status_code == 400
    assert status(engine, waiting)[0] == "queued"
    assert counters(engine, ref) == (1, 0)
    # The REST API is exempt: it takes bearer tokens, not cookies
    api = client.post(
        f"/api/v1/executions/{waiting}/cancel", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert api.status_code == 200
    assert counters(engine, ref) == (0, 1)


def test_a_revoked_token_ends_its_sessions(app: Flask, engine: Engine) -> None:
    with db.unit_of_work(engine) as session:
        token = tokens.create(session, "short-lived")
    client = app.test_client()
    assert login(client, token).status_code == 303
    assert client.get("/").status_code == 200
    with db.unit_of_work(engine) as session:
        tokens.revoke(session, "short-lived")
    assert client.get("/").status_code == 302


def test_login_only_goes_back_to_local_pages(app: Flask) -> None:
    client = app.test_client()
    for target, expected in [("/dlq", "/dlq"), ("//evil.example/x", "/"), ("https://x.y/", "/")]:
        data = {"token": TOKEN, "csrf_token": csrf_of(client, "/login"), "next": target}
        assert client.post("/login", data=data).location == expected


def test_the_session_key_is_kept_private_and_cookies_are_secure_by_default(
    settings: config.Settings, celery_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("USHER_SECRET_KEY", raising=False)
    first = web.create_app(settings, celery_app)
    key_file = settings.home / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert web.create_app(settings, celery_app).secret_key == first.secret_key
    monkeypatch.setenv("USHER_SECRET_KEY", "from-the-environment")
    # The fixture's settings allow plain HTTP; without that, cookies are Secure
    given = config.load(**settings.model_dump(exclude={"secret_key"}))
    app = web.create_app(given.model_copy(update={"insecure_cookies": False}), celery_app)
    assert app.secret_key == "from-the-environment"
    assert app.config["SESSION_COOKIE_SECURE"] is True
    client = app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    assert "Secure" in login(client, TOKEN).headers["Set-Cookie"]


def test_dead_letters_replay_and_purge_through_the_forms(
    app: Flask, engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    seeded = seed(engine, settings, tmp_path)
    client = app.test_client()
    assert login(client, TOKEN).status_code == 303
    for path in ["/", "/actions/ops.restart_service", "/events", "/dlq"]:
        assert client.get(path).status_code == 200, path
    dead = client.get(f"/executions/{seeded.dead[1]}").get_data(as_text=True)
    assert dead.count("TimeoutError: ledger") >= 2  # one per attempt
    token = csrf_of(client, "/dlq")
    replayed = client.post(f"/dlq/{seeded.dead[0]}/replay", data={"csrf_token": token})
    assert replayed.status_code == 303
    assert f"Execution {seeded.dead[0]} replayed as" in client.get("/dlq").get_data(as_text=True)
    assert client.post("/dlq/purge", data={"csrf_token": token}).status_code == 303
    assert "Purged 2 item" in client.get("/dlq").get_data(as_text=True)
    assert client.get("/executions/999999").status_code == 404
    assert client.get("/actions/no.such").status_code == 404


# --- the browser --------------------------------------------------------------------------------


def row_of(page: Any, ref: str) -> Any:
    return page.locator("table.lines tbody tr").filter(
        has=page.get_by_role("link", name=ref, exact=True)
    )


def test_an_operator_watches_lines_and_cancels_in_the_browser(
    page: Any,
    live_server: str,
    engine: Engine,
    settings: config.Settings,
    tmp_path: Path,
    artifacts: Path,
) -> None:
    from playwright.sync_api import expect

    seeded = seed(engine, settings, tmp_path)
    problems: list[str] = []  # script errors and CSP refusals, from any page of the context
    page.context.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.context.on("weberror", lambda e: problems.append(str(e.error)))
    # Given a logged-in operator
    page.goto(f"{live_server}/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    page.get_by_label("API token").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("status")).to_contain_text("not valid")
    page.screenshot(path=artifacts / "wide-login.png")
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Log in").click()
    # Then the overview lists every line with its counters, refreshing live
    expect(page.locator("#live")).to_contain_text("live")
    deploy = row_of(page, "ops.deploy")
    expect(deploy.locator("[data-cell=queue_length]")).to_have_text("3")
    expect(deploy.locator("[data-cell=active]")).to_have_text("1 / 1")
    expect(deploy.locator("[data-cell=succeeded]")).to_have_text("1")
    expect(deploy.locator("[data-cell=cancelled]")).to_have_text("0")
    expect(row_of(page, "ops.validate_order").locator("[data-cell=dead]")).to_have_text("2")
    partitions = page.locator("table.lines td.partition a")
    expect(partitions).to_have_text(["host=db1", "host=db2", "host=web1"])
    expect(deploy.locator("svg[data-spark] path.line")).to_have_count(1)
    expect(page.locator("[data-cell=dlq]")).to_have_text("3")
    page.screenshot(path=artifacts / "wide-overview.png", full_page=True)

    # When they open the action, they see its policy, chart, line and history
    actions = page.context.new_page()
    actions.goto(f"{live_server}/actions/ops.deploy")
    expect(actions.locator("svg[data-chart] path.depth-line")).to_have_count(1)
    waiting = actions.locator("#waiting tbody tr")
    expect(waiting).to_have_count(3)
    expect(waiting.first.locator("td").first).to_have_text("1")
    expect(actions.locator("table.policy")).to_contain_text("concurrency")
    expect(actions.locator("#recent .badge.s-running")).to_have_count(1)
    actions.screenshot(path=artifacts / "wide-action.png", full_page=True)

    # And cancel the first one waiting: the overview (still open) follows within seconds
    first_waiting = seeded.deploy[2]
    waiting.first.get_by_role("button", name="Cancel").click()
    expect(actions.get_by_role("status")).to_contain_text(
        f"Execution {first_waiting} cancelled (it was queued)"
    )
    expect(actions.locator("#waiting tbody tr")).to_have_count(2)
    expect(actions.locator("[data-cell=cancelled]")).to_have_text("1")
    expect(deploy.locator("[data-cell=queue_length]")).to_have_text("2", timeout=8_000)
    expect(deploy.locator("[data-cell=cancelled]")).to_have_text("1", timeout=8_000)
    page.screenshot(path=artifacts / "wide-overview-after-cancel.png", full_page=True)

    # The execution page shows the attempts and their timeline
    actions.goto(f"{live_server}/executions/{seeded.dead[1]}")
    expect(actions.get_by_test_id("status")).to_contain_text("dead")
    expect(actions.locator("table.attempts tbody tr")).to_have_count(2)
    expect(actions.locator("svg.tl-bar")).to_have_count(2)
    actions.screenshot(path=artifacts / "wide-execution.png", full_page=True)
    actions.goto(f"{live_server}/executions/{seeded.retrying}")
    expect(actions.get_by_test_id("status")).to_contain_text("retrying")
    expect(actions.get_by_role("button", name="Cancel")).to_be_enabled()

    # Dead letters: replay one, then purge the rest after confirming
    actions.goto(f"{live_server}/dlq")
    expect(actions.get_by_test_id("dlq-total")).to_have_text("3")
    actions.screenshot(path=artifacts / "wide-dlq.png", full_page=True)
    actions.get_by_test_id(f"replay-{seeded.dead[0]}").click()
    expect(actions.get_by_role("status")).to_contain_text(f"{seeded.dead[0]} replayed as")
    expect(actions.get_by_test_id("dlq-total")).to_have_text("2")
    actions.once("dialog", lambda dialog: dialog.accept())
    actions.get_by_role("button", name="Purge all…").click()
    expect(actions.get_by_role("status")).to_contain_text("Purged 2 item")
    expect(actions.locator("table.dlq td.empty")).to_be_visible()

    # Events, with what each rule did
    actions.goto(f"{live_server}/events")
    expect(actions.locator(".enforcement .e-executed")).to_have_count(2)
    expect(actions.locator(".enforcement .e-rejected")).to_have_count(1)
    expect(actions.locator(".enforcement .e-skipped")).to_have_count(2)
    actions.screenshot(path=artifacts / "wide-events.png", full_page=True)
    assert [p for p in problems if "401" not in p] == []  # the wrong token's answer


def test_the_waiting_line_shows_when_each_execution_should_start(
    app: Flask, engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    """With a pace on the line, every waiting row shows its estimated start."""
    name = packs.load(
        engine, tmp_path, [{"name": "paced", "runner": "noop", "policy": {"concurrency": 1}}]
    )
    ids = flow.submit(engine, settings, None, f"{name}.paced", [{}] * 5)
    for execution_id in ids[:2]:  # two starts make a pace
        run(engine, settings, execution_id)
    with engine.begin() as conn:  # spread the two starts over 10 s: a pace of 0.2/s
        conn.execute(
            text(
                "UPDATE attempts SET started_at = now() - interval '10 seconds' "
                "WHERE execution_id = :i"
            ),
            {"i": ids[0]},
        )
    client = app.test_client()
    assert login(client, TOKEN).status_code == 303
    page = client.get(f"/actions/{name}.paced").get_data(as_text=True)
    assert "Starts in" in page
    assert page.count("~") >= 2  # every waiting row has an estimate


def test_a_live_limit_change_reads_as_a_live_override(
    app: Flask, engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    name = packs.load(
        engine, tmp_path, [{"name": "job", "runner": "noop", "policy": {"concurrency": 1}}]
    )
    with db.unit_of_work(engine) as session:  # what `usher actions set` does
        control.update_policy(session, settings, f"{name}.job", {"max_queue_length": 5})
    client = app.test_client()
    assert login(client, TOKEN).status_code == 303
    page = client.get(f"/actions/{name}.job").get_data(as_text=True)

    def source(key: str) -> str:
        found = re.search(rf"<code>{key}</code></td><td>([^<]*)</td><td><span[^>]*>([^<]*)", page)
        assert found, key
        return f"{found.group(1)} {found.group(2)}"

    assert source("concurrency") == "1 action"  # from the action's file
    assert source("max_queue_length") == "5 live override"
    # and a pack load of the files ends the override
    packs.load(
        engine,
        tmp_path,
        [{"name": "job", "runner": "noop", "policy": {"concurrency": 1}}],
        name=name,
    )
    page = client.get(f"/actions/{name}.job").get_data(as_text=True)
    assert "live override" not in page
