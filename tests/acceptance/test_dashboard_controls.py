"""The action page's controls in a 1280 x 800 window, as an operator uses them: pause the
line, raise its limit, resume and watch the waiting executions start (granted: no worker
runs here, so they show as scheduled), then cancel the rest of the line after a
confirmation. Its screenshot (test-artifacts/dashboard-controls.png) is docs/images'.
(Each control's refusals through the test client: tests/integration/.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from app import config
from tests.acceptance.test_dashboard_pages import fits, log_in
from tests.support import flow, invariants, packs

pytestmark = pytest.mark.timeout(120)


def test_pause_raise_the_limit_resume_and_cancel_the_waiting_ones(
    laptop: Any,
    live_server: str,
    engine: Engine,
    settings: config.Settings,
    tmp_path: Path,
    artifacts: Path,
) -> None:
    from playwright.sync_api import expect

    # Given a deploy action of one slot: one execution granted, five waiting
    name = packs.load(
        engine, tmp_path, [packs.action("deploy", "noop", {"concurrency": 1})], name="ops"
    )
    ref = f"{name}.deploy"
    ids = flow.submit(engine, settings, None, ref, [{"host": f"web{i}"} for i in range(6)])
    confirmations: list[str] = []

    def accept(dialog: Any) -> None:
        confirmations.append(dialog.message)
        dialog.accept()

    laptop.on("dialog", accept)
    log_in(laptop, live_server)
    laptop.goto(f"{live_server}/actions/{ref}")
    flash = laptop.locator(".flash")
    waiting = laptop.locator("[data-cell=queue_length]")
    expect(waiting).to_have_text("5")
    # When the operator pauses it (after a confirmation) and raises its limit to 3
    laptop.get_by_test_id("pause").click()
    expect(flash).to_contain_text(f"{ref} paused")
    assert confirmations and confirmations[-1].startswith(f"Pause {ref}?")
    expect(laptop.locator(".page-head [data-flag=paused]")).to_be_visible()
    laptop.get_by_test_id("concurrency").fill("3")
    laptop.get_by_test_id("set-limits").click()
    expect(flash).to_contain_text("concurrency 3 until its pack is loaded again")
    expect(flash).to_contain_text("nothing granted now")
    expect(waiting).to_have_text("5")  # paused: nothing starts
    # And resumes it
    laptop.get_by_test_id("resume").click()
    # Then two more start at once and three wait
    expect(flash).to_contain_text(f"{ref} resumed: 2 granted now.")
    expect(waiting).to_have_text("3")
    expect(laptop.locator("[data-cell=active]")).to_contain_text("3")
    assert [flow.status(engine, i) for i in ids[:3]] == ["scheduled"] * 3
    laptop.get_by_test_id("cancel-waiting").scroll_into_view_if_needed()
    expect(laptop.get_by_test_id("cancel-waiting")).to_be_in_viewport(ratio=1)
    fits(laptop)
    laptop.screenshot(path=artifacts / "dashboard-controls.png", full_page=True)
    # When the operator cancels all waiting, after the confirmation
    laptop.get_by_test_id("cancel-waiting").click()
    # Then exactly the three waiting ones are cancelled; the three granted go on
    expect(flash).to_contain_text(": 3 waiting execution(s) cancelled.")
    assert "Cancel every execution waiting" in confirmations[-1]
    expect(waiting).to_have_text("0")
    expect(laptop.locator("#waiting")).to_contain_text("Nobody is waiting.")
    expect(laptop.get_by_test_id("cancel-waiting")).to_have_count(0)
    assert [flow.status(engine, i) for i in ids] == ["scheduled"] * 3 + ["cancelled"] * 3
    assert invariants.counter_mismatches(engine) == []
