"""The dashboard's pages in a 1280 x 800 window, as a new user meets them on a laptop.

Headless chromium against the real app; the data is ``seed``'s, left as workers, the
sweeper and the event processor leave it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from app import config, db
from policies import admission, control
from tests.acceptance.conftest import TOKEN
from tests.acceptance.seed import BACKOFF_MS, LEDGER, samples, seed
from tests.support import flow, packs

pytestmark = pytest.mark.timeout(120)

# Every element that would cut its content or scroll it sideways, and the page itself.
SIDEWAYS = """() => {
  const root = document.documentElement, found = [];
  if (root.scrollWidth > root.clientWidth) found.push(`page: ${root.scrollWidth}px`);
  for (const el of document.querySelectorAll("main *")) {
    if (getComputedStyle(el).overflowX !== "visible" && el.scrollWidth > el.clientWidth + 1) {
      found.push(`${el.tagName.toLowerCase()}.${el.className}: ${el.scrollWidth}px`);
    }
  }
  return found;
}"""


def log_in(page: Any, base: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base}/login")
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#live")).to_contain_text("live")


def fits(page: Any) -> None:
    """Nothing wider than the window: no sideways scrolling, nothing cut at the side."""
    assert page.evaluate(SIDEWAYS) == [], page.url


def test_every_page_fits_a_laptop_window(
    laptop: Any,
    live_server: str,
    engine: Engine,
    settings: config.Settings,
    tmp_path: Path,
    artifacts: Path,
) -> None:
    from playwright.sync_api import expect

    seeded = seed(engine, settings, tmp_path)
    laptop.goto(f"{live_server}/login")
    laptop.get_by_label("API token").fill("wrong")
    laptop.get_by_role("button", name="Log in").click()
    expect(laptop.get_by_role("status")).to_contain_text("not valid")
    fits(laptop)
    laptop.screenshot(path=artifacts / "dashboard-login.png")
    log_in(laptop, live_server)
    # (path, what shows it is drawn, screenshot name or None)
    pages = [
        ("/", "svg[data-spark] path.line >> nth=0", "overview"),
        ("/actions/ops.restart_service", "svg[data-chart] path.depth-line", "action"),
        (f"/actions/{LEDGER}", "svg[data-chart] path.depth-line", None),
        (f"/executions/{seeded.retried}", "rect.seg.backoff", "execution"),
        (f"/executions/{seeded.ledger_dead}", "table.attempts", None),
        ("/events", "table.events", "events"),
        ("/dlq", "table.dlq", "dlq"),
    ]
    for path, drawn, name in pages:
        assert laptop.goto(f"{live_server}{path}").ok, path
        expect(laptop.locator(drawn)).to_be_visible()
        fits(laptop)
        if name == "execution":  # its timeline and attempts, under the summary
            laptop.locator(".timeline").evaluate("e => window.scrollTo(0, e.offsetTop - 400)")
        if name:
            laptop.screenshot(path=artifacts / f"dashboard-{name}.png")
    # The DLQ's last column, with its Replay buttons, is on screen and whole
    replay = laptop.get_by_test_id(f"replay-{seeded.ledger_dead}")
    expect(replay).to_have_text("Replay")
    expect(replay).to_be_in_viewport(ratio=1)
    assert replay.evaluate("b => b.scrollWidth <= b.clientWidth")
    # A long error wraps to a few lines instead of being cut to one
    error = laptop.locator("table.dlq .clamp").first
    assert error.evaluate("e => e.getClientRects().length && e.offsetHeight") > 30
    assert "psycopg.errors.SerializationFailure" in (error.get_attribute("title") or "")


def test_a_fresh_system_charts_the_minutes_it_has(
    laptop: Any, live_server: str, engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    # Given an action that has been sampled for four minutes
    name = packs.load(engine, tmp_path, [{"name": "job", "runner": "noop"}], {"concurrency": 1})
    flow.submit(engine, settings, None, f"{name}.job", [{}] * 4)
    samples(engine, minutes=4)
    log_in(laptop, live_server)
    # Then the overview's sparkline spans those minutes, at a readable height, mid-cell
    spark = laptop.locator("svg[data-spark]")
    expect(spark.locator("path.line")).to_have_count(1)
    expect(laptop.locator("th[data-spark-window]")).to_have_text("Waiting, last 5 min")
    expect(laptop.locator(".spark-peak")).to_have_text(re.compile(r"^max \d+$"))
    box, cell = spark.bounding_box(), laptop.locator("td.spark-cell").bounding_box()
    assert box["height"] >= 28
    assert abs((box["y"] + box["height"] / 2) - (cell["y"] + cell["height"] / 2)) <= 2
    # (its points are each minute's highest: they start up to a minute after the samples)
    assert spark.locator("path.line").bounding_box()["width"] > box["width"] / 3
    # And the action's chart spans 5 minutes, not an hour with the data in its last pixels
    laptop.goto(f"{live_server}/actions/{name}.job")
    chart = laptop.locator("svg[data-chart]")
    expect(chart.locator("path.depth-line")).to_have_count(1)
    expect(laptop.locator("[data-chart-window]")).to_have_text("Last 5 min")
    expect(chart.locator("text.axis.time")).to_have_text(
        ["-5 min", "-4 min", "-3 min", "-2 min", "-1 min", "now"]
    )
    plot = chart.locator("line.grid-line").first.bounding_box()
    assert chart.locator("path.depth-line").bounding_box()["width"] > plot["width"] / 2


def test_the_action_page_follows_the_line_live(
    laptop: Any, live_server: str, engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    seeded = seed(engine, settings, tmp_path)
    log_in(laptop, live_server)
    laptop.goto(f"{live_server}/actions/ops.deploy")
    waiting = laptop.locator("#waiting tbody tr")
    expect(waiting).to_have_count(3)
    expect(laptop.locator(".tiles [data-cell=queue_length]")).to_have_text("3")
    # When the first one waiting is cancelled elsewhere (the API, the CLI, another operator)
    first = seeded.deploy[2]
    with db.unit_of_work(engine) as session:
        admission.cancel(session, settings, first)
    # Then the tiles, the waiting line and the recent executions follow without a reload
    expect(laptop.locator(".tiles [data-cell=queue_length]")).to_have_text("2", timeout=8_000)
    expect(waiting).to_have_count(2, timeout=8_000)
    expect(laptop.get_by_test_id(f"cancel-{first}")).to_have_count(0)
    expect(waiting.first.locator("td").first).to_have_text("1")
    recent = laptop.locator("#recent tbody tr").filter(has_text=f"#{first}")
    expect(recent.locator(".badge")).to_have_text("cancelled", timeout=8_000)
    # And a new arrival joins the line on screen
    [arrived] = flow.submit(engine, settings, None, "ops.deploy", [{"service": "web"}])
    expect(laptop.get_by_test_id(f"cancel-{arrived}")).to_have_count(2, timeout=8_000)
    expect(waiting).to_have_count(3)
    fits(laptop)


def test_a_partitioned_action_shows_its_limit_per_partition(
    laptop: Any, live_server: str, engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    seed(engine, settings, tmp_path)
    log_in(laptop, live_server)
    laptop.goto(f"{live_server}/actions/ops.restart_service")
    tile = laptop.locator(".tile").filter(has=laptop.get_by_test_id("partition-limit"))
    expect(tile.locator(".label")).to_have_text("Active")
    expect(tile.locator(".value")).to_have_text("3")
    expect(tile.get_by_test_id("partition-limit")).to_have_text(
        "limit 1 per partition, 3 partitions"
    )
    # The line's own row, not total_concurrency's
    row = laptop.locator("table.policy tr").filter(has_text=re.compile(r"^\s*concurrency"))
    expect(row).to_contain_text("1")


def test_a_paused_action_says_so_everywhere(
    laptop: Any, live_server: str, engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    seed(engine, settings, tmp_path)  # ops.notify is paused
    log_in(laptop, live_server)
    paused = laptop.locator("table.lines .badge.s-paused:visible")
    expect(paused).to_have_count(1)
    expect(row_of(laptop, "ops.notify").locator(".badge.s-paused")).to_be_visible()
    laptop.goto(f"{live_server}/actions/ops.notify")
    expect(laptop.locator(".page-head .badge.s-paused")).to_have_text("paused")
    # When an operator pauses a partitioned action while its page is open
    laptop.goto(f"{live_server}/actions/ops.restart_service")
    expect(laptop.locator(".page-head .badge.s-paused")).to_be_hidden()
    with db.unit_of_work(engine) as session:
        control.set_paused(session, settings, "ops.restart_service", True)
    # Then the page and each of its lines say so on the next refresh
    expect(laptop.locator(".page-head .badge.s-paused")).to_be_visible(timeout=8_000)
    expect(laptop.locator("[data-fragment=lines] .badge.s-paused:visible")).to_have_count(3)
    laptop.goto(f"{live_server}/")
    expect(paused).to_have_count(4)  # notify, and each line of restart_service
    fits(laptop)


def row_of(page: Any, ref: str) -> Any:
    return page.locator("table.lines tbody tr").filter(
        has=page.get_by_role("link", name=ref, exact=True)
    )


def test_a_retry_shows_its_backoff(
    laptop: Any, live_server: str, engine: Engine, settings: config.Settings, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    # Given a sync that failed, backed off 500 ms (fixed), and succeeded on its second try
    seeded = seed(engine, settings, tmp_path)
    log_in(laptop, live_server)
    laptop.goto(f"{live_server}/executions/{seeded.retried}")
    # Then its second attempt's bar starts with a labelled backoff segment
    bars = laptop.locator("svg.tl-bar")
    expect(bars).to_have_count(2)
    expect(bars.first.locator("rect.seg.backoff")).to_have_count(0)
    backoff = bars.nth(1).locator("rect.seg.backoff")
    expect(backoff.locator("title")).to_have_text(f"backoff {BACKOFF_MS} ms")
    expect(bars.nth(1).locator("text.seg-label")).to_have_text(f"backoff {BACKOFF_MS} ms")
    expect(bars.nth(1).locator("rect.seg.wait")).to_have_count(1)
    # And the attempts table says the same: the backoff apart from the wait in line
    expect(laptop.get_by_test_id("backoff-1")).to_have_text("—")
    expect(laptop.get_by_test_id("backoff-2")).to_have_text(f"{BACKOFF_MS} ms")
    expect(laptop.locator("table.attempts th").filter(has_text="Waited in line")).to_have_count(1)
    # And the big result wraps in its box
    result = laptop.locator("pre.json").nth(1)
    expect(result).to_contain_text("s3://inventory-exports/")
    assert result.evaluate("e => e.scrollWidth <= e.clientWidth")
    fits(laptop)
