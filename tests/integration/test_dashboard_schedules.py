"""The dashboard's schedules page through Flask's test client against a real Postgres: each
schedule's timing, state, next ticks (its timezone and UTC), last tick and the execution it
made; pause and resume through CSRF forms with an admin session, 403 with a read-only one.
(The page in a browser at 1280 px: tests/acceptance/test_dashboard_schedules.py.)"""

from __future__ import annotations

import re
from datetime import UTC
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine

import web
from app import config, db, tokens
from policies import schedules, ticks
from tests.integration.test_schedules import fire, load, next_fire_at, write_pack
from tests.support.api import TOKEN, csrf, signed_in

pytestmark = pytest.mark.timeout(60)
PLAN = {
    "nightly": {
        "description": "Back the databases up.",
        "cron": "0 3 * * *",
        "timezone": "Europe/Berlin",
        "action": "PACK.a",
    },
    "pulse": {"every_s": 30, "trigger": "pulse.tick", "missed": "run_once"},
    "refused": {"every_s": 3600, "action": "PACK.strict"},
    "off": {"every_s": 60, "action": "PACK.a", "enabled": False},
}
STRICT = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


@pytest.fixture
def settings(dashboard_settings: config.Settings) -> config.Settings:
    return dashboard_settings


@pytest.fixture
def pack(engine: Engine, tmp_path: Path) -> str:
    name = "dash"
    plan = {
        key: {k: v.replace("PACK", name) if isinstance(v, str) else v for k, v in value.items()}
        for key, value in PLAN.items()
    }
    actions = {"a": {"runner": "noop"}, "strict": {"runner": "noop", "parameters": STRICT}}
    return load(engine, write_pack(tmp_path, plan, actions=actions, name=name))


def _rows(html: str) -> dict[str, str]:
    """Each schedule's table row, by ref."""
    return {
        match.group(1): match.group(0)
        for match in re.finditer(r'<tr data-schedule="([^"]+)">.*?</tr>', html, re.S)
    }


def _text(fragment: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", fragment.replace("<wbr>", "")).split())


def test_the_page_shows_each_schedule_its_next_ticks_and_its_last_one(
    engine: Engine, settings: config.Settings, celery_app: Any, pack: str
) -> None:
    # Given the nightly backup and the refused schedule fired once each (and the pulse)
    nightly_at = next_fire_at(engine, f"{pack}.nightly")
    refused_at = next_fire_at(engine, f"{pack}.refused")
    fires = [
        f for now in sorted({nightly_at, refused_at}) for f in fire(engine, settings, now).fires
    ]
    ticked = next(f for f in fires if f.schedule == f"{pack}.nightly")
    assert ticked.enforcement is not None and ticked.enforcement.execution_id
    client = signed_in(settings, celery_app, TOKEN)
    # When the schedules page is opened
    page = client.get("/schedules")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    # Then the nav links to it, and it lists every schedule
    assert 'href="/schedules" aria-current="page">Schedules</a>' in html
    rows = _rows(html)
    assert sorted(rows) == [f"{pack}.{n}" for n in ("nightly", "off", "pulse", "refused")]
    nightly = _text(rows[f"{pack}.nightly"])
    assert "Back the databases up." in nightly
    assert "cron 0 3 * * *" in nightly and "Europe/Berlin" in nightly
    assert f"{pack}.a" in nightly and "skip" in nightly and "enabled" in nightly
    # Its next three ticks, at 03:00 Berlin time, each with its UTC time
    zone = ZoneInfo("Europe/Berlin")
    timing = ticks.Timing(cron="0 3 * * *", timezone="Europe/Berlin")
    for moment in timing.upcoming(nightly_at, 3):
        local = moment.astimezone(zone)
        assert local.strftime("%Y-%m-%d 03:00:00 %Z") in nightly
        assert moment.astimezone(UTC).strftime("%H:%M:%S UTC") in nightly
    assert len(re.findall(r'class="tick"', rows[f"{pack}.nightly"])) == 3 + 1  # next 3, last
    assert re.search(r"\bin 1d \d\dh\b", nightly)  # the first: tomorrow's, not tonight's
    # Its last tick and the execution it made, linked to the execution's page
    execution_id = ticked.enforcement.execution_id
    assert f'href="/executions/{execution_id}"' in rows[f"{pack}.nightly"]
    assert nightly_at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z") in nightly
    assert "scheduled" in nightly or "queued" in nightly
    # A trigger schedule: its event, in UTC only (its timezone is UTC)
    pulse = _text(rows[f"{pack}.pulse"])
    assert "every 30s" in pulse and "pulse.tick" in pulse and "run once" in pulse
    assert "UTC UTC" not in pulse and re.search(r"event #\d+", pulse)
    # A refused tick says why; a disabled schedule has no ticks and no button
    refused = _text(rows[f"{pack}.refused"])
    assert "rejected" in refused and "InvalidParameters" in refused
    off = _text(rows[f"{pack}.off"])
    assert "disabled" in off and "not fired yet" in off
    assert "<button" not in rows[f"{pack}.off"]
    assert 'data-testid="pause-dash.nightly"' in rows[f"{pack}.nightly"]


def test_an_admin_pauses_and_resumes_through_the_forms(
    engine: Engine, settings: config.Settings, celery_app: Any, pack: str
) -> None:
    client = signed_in(settings, celery_app, TOKEN)
    token = csrf(client, "/schedules")
    ref = f"{pack}.nightly"
    # Without the CSRF token nothing changes
    assert client.post(f"/schedules/{ref}/pause").status_code == 400
    with db.unit_of_work(engine) as session:
        assert schedules.one(session, ref)["paused"] is False
    paused = client.post(
        f"/schedules/{ref}/pause", data={"csrf_token": token, "next": "/schedules"}
    )
    assert paused.status_code == 303 and paused.headers["Location"] == "/schedules"
    page = client.get("/schedules").get_data(as_text=True)
    assert f"Schedule {ref} paused" in page
    row = _rows(page)[ref]
    assert "s-paused" in row and f'data-testid="resume-{ref}"' in row
    assert "if-resumed" in row and len(re.findall(r'class="tick"', row)) == 3
    with db.unit_of_work(engine) as session:
        assert schedules.one(session, ref)["paused"] is True
    resumed = client.post(f"/schedules/{ref}/resume", data={"csrf_token": token})
    assert resumed.status_code == 303
    page = client.get("/schedules").get_data(as_text=True)
    assert f"Schedule {ref} resumed: its next tick is" in page
    assert f'data-testid="pause-{ref}"' in _rows(page)[ref]
    # An unknown schedule is said so on the page
    client.post("/schedules/dash.nope/pause", data={"csrf_token": token})
    assert "no schedule named &#39;dash.nope&#39;" in client.get("/schedules").get_data(
        as_text=True
    )


def test_a_read_only_session_sees_the_page_and_cannot_pause(
    engine: Engine, settings: config.Settings, celery_app: Any, pack: str
) -> None:
    assert web.create_app(settings, celery_app).test_client().get("/schedules").status_code == 302
    with db.unit_of_work(engine) as session:
        reader = tokens.create(session, "reader", True)
    client = signed_in(settings, celery_app, reader)
    html = client.get("/schedules").get_data(as_text=True)
    assert re.search(r'data-testid="pause-dash\.nightly"\s+disabled title="read-only token"', html)
    token = csrf(client, "/schedules")
    assert (
        client.post("/schedules/dash.nightly/pause", data={"csrf_token": token}).status_code == 403
    )
    with db.unit_of_work(engine) as session:
        assert schedules.one(session, "dash.nightly")["paused"] is False


def test_a_page_with_no_schedules_says_how_to_add_one(
    settings: config.Settings, celery_app: Any
) -> None:
    html = signed_in(settings, celery_app, TOKEN).get("/schedules").get_data(as_text=True)
    assert "No schedules." in html
