"""The schedules page in a 1280 x 800 window: every column on screen with nothing cut or
scrolled sideways, a tick's execution one click away, and pause and resume from its
buttons. (The page's HTML through the test client: tests/integration/.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from app import config, db
from policies import schedules
from tests.acceptance.test_dashboard_pages import fits, log_in
from tests.integration.test_schedules import fire, load, next_fire_at, write_pack

pytestmark = pytest.mark.timeout(120)
LONG = "reconcile_customer_ledger_entries_nightly"


def _pack(engine: Engine, tmp_path: Path) -> str:
    """What an operator meets: a cron schedule in a far timezone with a long name and a long
    description, a pulse, a one-off, a paused one and a disabled one."""
    plan = {
        LONG: {
            "description": "Reconcile every customer's ledger against the payment provider's "
            "settlement files once the nightly settlement run has finished.",
            "cron": "30 2 * * 1-5",
            "timezone": "America/Los_Angeles",
            "action": "ops.reconcile_customer_ledger_entries",
            "parameters": {"when": "{{ schedule.fire_at }}"},
        },
        "heartbeat": {"every_s": 30, "trigger": "ops.heartbeat", "missed": "run_once"},
        "release": {"at": "2031-07-01T09:00:00", "timezone": "Europe/Berlin", "action": "ops.a"},
        "backup": {"cron": "0 3 * * *", "timezone": "Asia/Kolkata", "action": "ops.a"},
        "cleanup": {"every_s": 3600, "action": "ops.a", "enabled": False},
    }
    actions = {
        "a": {"runner": "noop"},
        "reconcile_customer_ledger_entries": {"runner": "noop"},
    }
    name = load(engine, write_pack(tmp_path, plan, actions=actions, name="ops"))
    with db.unit_of_work(engine) as session:
        schedules.set_paused(session, f"{name}.backup", True)
    return name


def test_the_schedules_page_fits_and_pauses(
    laptop: Any,
    live_server: str,
    engine: Engine,
    settings: config.Settings,
    tmp_path: Path,
    artifacts: Path,
) -> None:
    from playwright.sync_api import expect

    # Given schedules, the long-named one fired once
    pack = _pack(engine, tmp_path)
    fired = fire(engine, settings, next_fire_at(engine, f"{pack}.{LONG}"))
    [tick] = [f for f in fired.fires if f.schedule == f"{pack}.{LONG}"]
    assert tick.enforcement is not None
    execution_id = tick.enforcement.execution_id
    # When the operator opens the page from the header
    log_in(laptop, live_server)
    laptop.get_by_role("link", name="Schedules", exact=True).click()
    rows = laptop.locator("table.schedules tbody tr")
    expect(rows).to_have_count(5)
    laptop.screenshot(path=artifacts / "dashboard-schedules.png")
    fits(laptop)
    # Then each running schedule shows its next three ticks, and the fired one its execution
    expect(laptop.get_by_test_id(f"next-{pack}.{LONG}").locator(".tick")).to_have_count(3)
    expect(laptop.get_by_test_id(f"next-{pack}.{LONG}")).to_contain_text("PST")
    expect(laptop.get_by_test_id(f"next-{pack}.release").locator(".tick")).to_have_count(1)
    link = laptop.get_by_test_id(f"last-{pack}.{LONG}").get_by_role("link", name=f"#{execution_id}")
    expect(link).to_be_in_viewport(ratio=1)
    # And every row's button is whole on screen, then pauses and resumes
    pause = laptop.get_by_test_id(f"pause-{pack}.{LONG}")
    expect(pause).to_be_in_viewport(ratio=1)
    expect(laptop.get_by_test_id(f"resume-{pack}.backup")).to_be_visible()
    pause.click()
    expect(laptop.get_by_role("status")).to_contain_text(f"Schedule {pack}.{LONG} paused")
    resume = laptop.get_by_test_id(f"resume-{pack}.{LONG}")
    expect(resume).to_be_visible()
    with db.unit_of_work(engine) as session:
        assert schedules.one(session, f"{pack}.{LONG}")["paused"] is True
    resume.click()
    expect(laptop.get_by_role("status")).to_contain_text("resumed: its next tick is")
    expect(laptop.get_by_test_id(f"pause-{pack}.{LONG}")).to_be_visible()
    fits(laptop)
    # And the execution is one click away
    laptop.get_by_test_id(f"last-{pack}.{LONG}").get_by_role("link").click()
    expect(laptop).to_have_url(f"{live_server}/executions/{execution_id}")
