"""The operator's story in one run, in a 1280 x 800 window, against a real deployment: real
Postgres, the broker of USHER_TEST_BROKER_URL and a real worker process.

1. pause a deploy line from its controls and submit five deploys through the API: they wait;
2. raise its concurrency from 1 to 3 live, resume it, and watch the waiting ones start and
   finish (on the page, and in Postgres: every started_at set, never more than 3 at once);
3. disable a rule on /rules: an event of its trigger then gets a *skipped* enforcement;
4. re-run a deploy from its page with an edited version (the form refuses one the action's
   schema does not allow, then takes a good one): the new execution names it in rerun_of;
5. follow that re-run's shell output on its page line by line while it runs.

Its screenshots go to test-artifacts/operator-*.png; copied to docs/images by hand when
the pages change, docs/dashboard.md shows them ("The operator's story in one run"). Each
step's details have their own tests: test_dashboard_controls, test_output_live,
tests/integration/.
"""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, text

from tests.acceptance.conftest import ARTIFACTS, TOKEN
from tests.acceptance.test_dashboard_pages import fits, log_in
from tests.support import api, invariants, packs
from tests.support.flow import wait_until
from tests.support.workers import Pool

# Not marked broker: its subject is the dashboard, so the Redis pass of CI leaves it out.
pytestmark = pytest.mark.timeout(180)

# Every wait of the page, in ms (Playwright's) and s (Postgres polls): a hang fails in time.
WAIT_MS = 30_000
WAIT_S = 30.0
# Four lines, 1.5 s apart: one deploy runs for about 4.5 s.
DEPLOY = (
    'echo "deploy $USHER_PARAM_VERSION to $USHER_PARAM_HOST"; sleep 1.5; '
    'echo "health checks passed"; sleep 1.5; '
    'echo "traffic switched"; sleep 1.5; '
    'echo "deployed $USHER_PARAM_VERSION"'
)
VERSION = {"type": "string", "pattern": "^[0-9]+[.][0-9]+[.][0-9]+$"}
HOSTS = [f"web{i}" for i in range(1, 6)]


def _pack(engine: Engine, tmp_path: Path) -> str:
    """A pack of one shell deploy (one at a time) and a rule that deploys on a merge."""
    name = f"t{uuid.uuid4().hex[:8]}"
    deploy = {
        "name": "deploy",
        "description": "Deploy a version to a host, one host at a time.",
        "runner": "shell",
        "runner_config": {"command": DEPLOY},
        "timeout_s": 60,
        "parameters": {
            "type": "object",
            "properties": {"host": {"type": "string"}, "version": VERSION},
            "required": ["host", "version"],
            "additionalProperties": False,
        },
        "policy": {"concurrency": 1},
    }
    root = packs.write_folder(tmp_path / name, {"name": name, "policy": {}}, [deploy])
    rule = {
        "name": "deploy_on_merge",
        "description": "Deploy main to its canary host when a merge lands.",
        "trigger": "merged",
        "action": f"{name}.deploy",
        "parameters": {
            "host": "{{ event.payload.host }}",
            "version": "{{ event.payload.version }}",
        },
    }
    (root / "rules").mkdir()
    (root / "rules" / "deploy_on_merge.yaml").write_text(yaml.safe_dump(rule))
    packs.load_folder(engine, root)
    return name


def _api(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST ``body`` to the REST API with the admin token; its JSON answer."""
    request = urllib.request.Request(
        f"{base}/api/v1{path}",
        data=json.dumps(body).encode(),
        headers={**api.bearer(TOKEN), "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=WAIT_S) as answer:
        assert answer.status in (200, 202), answer.status
        found: dict[str, Any] = json.loads(answer.read())
        return found


def _rows(engine: Engine, ids: list[int]) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("""SELECT id, status, started_at, finished_at, rerun_of, parameters
                        FROM executions WHERE id = ANY(:ids) ORDER BY id"""),
                {"ids": ids},
            ).all()
        )


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM executions")).scalar_one())


def _status(engine: Engine, execution_id: int) -> str:
    return str(_rows(engine, [execution_id])[0].status)


def _shoot(page: Any, name: str, full_page: bool = False) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"operator-{name}.png", full_page=full_page)


def test_the_operators_story_in_one_run(
    laptop: Any,
    live_server: str,
    engine: Engine,
    worker_pool: Pool,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import Expect

    expect = Expect()  # this test's own, not the session's: every wait up to WAIT_MS
    expect.set_options(timeout=WAIT_MS)
    page = laptop
    page.set_default_timeout(WAIT_MS)
    problems: list[str] = []  # script errors and CSP refusals

    def console(message: Any) -> None:
        if message.type == "error":
            problems.append(message.text)

    page.on("console", console)
    page.on("dialog", lambda dialog: dialog.accept())  # every data-confirm, accepted
    pack = _pack(engine, tmp_path)
    ref = f"{pack}.deploy"
    rule = f"{pack}.deploy_on_merge"
    worker_pool.start(concurrency=4)
    log_in(page, live_server)
    flash = page.locator(".flash")

    # 1. The operator pauses the deploy line from its controls; five deploys then wait
    page.goto(f"{live_server}/actions/{ref}")
    page.get_by_test_id("pause").click()
    expect(flash).to_contain_text(f"{ref} paused")
    expect(page.locator(".page-head [data-flag=paused]")).to_be_visible()
    submitted = [
        _api(
            live_server,
            "/executions",
            {"action": ref, "parameters": {"host": h, "version": "2.5.0"}},
        )
        for h in HOSTS
    ]
    assert [s["status"] for s in submitted] == ["queued"] * 5
    ids = [s["id"] for s in submitted]
    waiting = page.locator("[data-cell=queue_length]")
    expect(waiting).to_have_text("5")  # the page's live refresh, no reload
    expect(page.locator("table.waiting tbody tr")).to_have_count(5)
    expect(page.locator("[data-cell=active]")).to_contain_text("0")
    assert all(r.status == "queued" and r.started_at is None for r in _rows(engine, ids))
    _shoot(page, "paused", full_page=True)

    # 2. It raises the limit to 3 while paused (nothing starts), then resumes
    page.get_by_test_id("concurrency").fill("3")
    page.get_by_test_id("set-limits").click()
    expect(flash).to_contain_text("concurrency 3 until its pack is loaded again")
    expect(flash).to_contain_text("nothing granted now")
    expect(waiting).to_have_text("5")
    page.get_by_test_id("resume").click()
    expect(flash).to_contain_text(f"{ref} resumed: 3 granted now.")
    expect(page.locator(".page-head [data-flag=paused]")).to_be_hidden()
    # Then the waiting ones start, three at a time, and all finish
    recent = page.locator("#recent")
    expect(page.locator("[data-cell=active]")).to_have_text("3 / 3")
    expect(recent.locator(".badge.s-running").first).to_be_visible()
    fits(page)
    _shoot(page, "resumed", full_page=True)
    expect(page.locator("[data-cell=succeeded]")).to_have_text("5")
    expect(waiting).to_have_text("0")
    expect(recent.locator(".badge.s-succeeded")).to_have_count(5)
    wait_until(
        lambda: all(r.status == "succeeded" for r in _rows(engine, ids)), WAIT_S, what="5 deploys"
    )
    rows = _rows(engine, ids)
    assert all(r.started_at is not None and r.finished_at is not None for r in rows)
    lines = invariants.queue_ids(engine, ref)
    assert invariants.max_active(engine, lines) == 3
    assert invariants.fifo_violations(engine, lines) == 0

    # 3. It disables the merge rule on /rules; a merge event then gets a skipped enforcement
    page.get_by_role("link", name="Rules", exact=True).click()
    expect(page.get_by_test_id(f"state-{rule}")).to_have_text("enabled")
    page.get_by_test_id(f"disable-{rule}").click()
    expect(flash).to_contain_text(f"Rule {rule} disabled: its events get skipped enforcements")
    expect(page.get_by_test_id(f"state-{rule}")).to_have_text("disabled")
    event = _api(
        live_server,
        "/events?wait=20",
        {"trigger": "merged", "payload": {"host": "web9", "version": "2.6.0"}},
    )
    assert event["processed"] is True, event
    [enforcement] = event["enforcements"]
    assert (enforcement["rule"], enforcement["status"]) == (rule, "skipped"), enforcement
    assert enforcement["execution_id"] is None
    page.reload()
    expect(page.get_by_test_id(f"enforcements-{rule}")).to_have_text("skipped 1")
    page.get_by_test_id(f"enforcements-{rule}").scroll_into_view_if_needed()
    fits(page)
    _shoot(page, "rule-disabled")
    assert _count(engine) == len(ids)  # the disabled rule enqueued nothing

    # 4. It re-runs the first deploy from its page, the version edited
    page.goto(f"{live_server}/executions/{ids[0]}")
    form = page.get_by_test_id("rerun-parameters")
    page.locator("details.rerun summary").click()
    form.fill('{"version": "latest"}')
    page.get_by_test_id("rerun").click()
    # Then the action's schema refuses it, on the same page, and nothing is enqueued
    expect(page.locator(".flash.error")).to_contain_text("parameters.version: 'latest' does not")
    expect(page).to_have_url(f"{live_server}/executions/{ids[0]}")
    assert _count(engine) == len(ids)
    # And a good version makes a re-run, whose page the form opens
    page.locator("details.rerun summary").click()
    form.fill('{"version": "2.6.0"}')
    fits(page)  # the open form too
    _shoot(page, "rerun")
    page.get_by_test_id("rerun").click()
    expect(flash).to_contain_text(f"Execution {ids[0]} re-run as ")
    expect(page).to_have_url(re.compile(rf"{live_server}/executions/\d+$"))
    rerun = int(page.url.rsplit("/", 1)[1])
    [row] = _rows(engine, [rerun])
    assert row.rerun_of == ids[0]
    assert row.parameters == {"host": "web1", "version": "2.6.0"}
    expect(page.get_by_role("link", name=f"#{ids[0]}")).to_be_visible()  # "Re-run of"

    # 5. Its page follows the re-run's output line by line while it runs
    stdout = page.get_by_test_id("stdout")
    expect(stdout).to_contain_text("deploy 2.6.0 to web1")
    seen = stdout.text_content()
    assert _status(engine, rerun) == "running", "the first line came only once it was over"
    assert seen.startswith("deploy 2.6.0 to web1\n"), seen
    expect(page.locator("[data-output-state]")).to_contain_text("live")
    _shoot(page, "output-live")
    expect(page.locator("[data-output-state]")).to_contain_text("finished")
    expect(stdout).to_have_text(
        "deploy 2.6.0 to web1\nhealth checks passed\ntraffic switched\ndeployed 2.6.0\n"
    )
    wait_until(lambda: _status(engine, rerun) == "succeeded", WAIT_S, what="the re-run")
    assert invariants.counter_mismatches(engine) == []
    assert problems == []
