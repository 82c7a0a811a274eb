"""In a browser: a running shell execution's output appears on its page line by line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from app import config
from tests.acceptance.conftest import TOKEN
from tests.support import packs
from tests.support.flow import status, submit
from tests.support.schemas import declaring
from tests.support.workers import Pool

# Not marked broker: its subject is the output's page, so the Redis pass of CI leaves it out.
pytestmark = pytest.mark.timeout(180)

STEPS = 'for i in 1 2 3 4 5 6 7 8; do echo "step $i <i>"; sleep 0.5; done'


def test_the_execution_page_follows_a_running_shell_execution(
    page: Any,
    live_server: str,
    engine: Engine,
    settings: config.Settings,
    celery_app: Any,
    worker_pool: Pool,
    tmp_path: Path,
    artifacts: Path,
) -> None:
    from playwright.sync_api import expect

    problems: list[str] = []  # script errors and CSP refusals
    page.context.on("console", lambda m: m.type == "error" and problems.append(m.text))
    action = {
        "name": "steps",
        "runner": "shell",
        "runner_config": {"command": STEPS},
        "parameters": declaring(),
    }
    name = packs.load(engine, tmp_path, [action])
    worker_pool.start(concurrency=1)
    # Given a logged-in operator
    page.goto(f"{live_server}/login")
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Log in").click()
    # When they open a shell execution's page while it runs
    [execution] = submit(engine, settings, celery_app, f"{name}.steps", [{}])
    page.goto(f"{live_server}/executions/{execution}")
    stdout = page.get_by_test_id("stdout")
    # Then its output appears line by line before it ends, as text (never HTML)
    expect(stdout).to_contain_text("step 2 <i>")
    assert status(engine, execution) == "running"
    expect(stdout).not_to_contain_text("step 8")
    expect(page.locator("[data-output-state]")).to_contain_text("live")
    page.screenshot(path=artifacts / "wide-output-live.png", full_page=True)
    # And it stops refreshing once the attempt is over, with every line
    expect(page.locator("[data-output-state]")).to_contain_text("finished", timeout=20_000)
    expected = "".join(f"step {i} <i>\n" for i in range(1, 9))
    assert stdout.text_content() == expected
    assert page.locator("pre[data-stream] i").count() == 0
    expect(page.locator("section[data-output]")).to_have_attribute(
        "data-finished", re.compile("true")
    )
    assert problems == []
