"""The schedules' CLI (``usher schedules list|pause|resume``) and API (``GET /api/v1/schedules``,
``POST /api/v1/schedules/<ref>/pause|resume``) against a real Postgres; no beat runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import Engine

from app import cli, config, db, tokens
from app.cli.client import ApiError
from app.errors import NotFound
from tests.integration.test_schedules import load, write_pack
from tests.support.api import AUTH, bearer
from tests.support.command import usher
from web import schedule_schemas

pytestmark = pytest.mark.timeout(60)
PLAN = {
    "nightly": {"cron": "0 3 * * *", "timezone": "Europe/Berlin", "action": "w.a"},
    "pulse": {"every_s": 30, "trigger": "w.pulse", "missed": "run_once"},
}


@pytest.fixture
def settings(api_settings: config.Settings) -> config.Settings:
    return api_settings


@pytest.fixture
def loaded(engine: Engine, tmp_path: Path) -> str:
    return load(engine, write_pack(tmp_path, PLAN, name="w"))


@pytest.mark.usefixtures("cli_env")
def test_usher_schedules_lists_pauses_and_resumes(loaded: str) -> None:
    listed = json.loads(usher("schedules", "list", "--json"))
    assert [(s["ref"], s["spec"], s["timezone"]) for s in listed] == [
        ("w.nightly", "cron 0 3 * * *", "Europe/Berlin"),
        ("w.pulse", "every 30s", "UTC"),
    ]
    assert [(s["action"], s["trigger"], s["missed"]) for s in listed] == [
        ("w.a", None, "skip"),
        (None, "w.pulse", "run_once"),
    ]
    assert all(s["enabled"] and not s["paused"] and s["next_fire_at"] for s in listed)
    # The table: one aligned row per schedule
    lines = [line for line in usher("schedules", "list").splitlines() if "w." in line]
    assert len(lines) == 2 and "cron 0 3 * * *" in lines[0] and "Europe/Berlin" in lines[0]
    assert lines[0].index("│", 2) == lines[1].index("│", 2)
    assert "w.nightly: paused" in usher("schedules", "pause", "w.nightly")
    assert "paused" in next(
        line for line in usher("schedules", "list").splitlines() if "nightly" in line
    )
    assert "w.nightly: enabled, next fire" in usher("schedules", "resume", "w.nightly")
    with pytest.raises(ApiError, match=r"no schedule named 'w\.nope'") as no:
        CliRunner().invoke(cli.main, ["schedules", "pause", "w.nope"], catch_exceptions=False)
    assert (no.value.status, no.value.code) == (404, NotFound.code)


def test_the_api_lists_schedules_to_any_token_and_pauses_them_with_an_admin_one(
    client: FlaskClient, engine: Engine, loaded: str
) -> None:
    with db.unit_of_work(engine) as session:
        reader = tokens.create(session, "reader", True)
    # Any valid token reads
    response = client.get("/api/v1/schedules", headers=bearer(reader))
    assert response.status_code == 200
    listed = schedule_schemas.Schedules.model_validate(response.get_json())
    assert [s.ref for s in listed.items] == ["w.nightly", "w.pulse"]
    assert client.get("/api/v1/schedules").status_code == 401
    # A write needs an admin token
    assert client.post("/api/v1/schedules/w.pulse/pause", headers=bearer(reader)).status_code == 403
    paused = client.post("/api/v1/schedules/w.pulse/pause", headers=AUTH)
    assert paused.status_code == 200
    assert schedule_schemas.Schedule.model_validate(paused.get_json()).paused
    resumed = client.post("/api/v1/schedules/w.pulse/resume", headers=AUTH)
    assert resumed.status_code == 200 and resumed.get_json()["paused"] is False
    unknown = client.post("/api/v1/schedules/w.nope/resume", headers=AUTH)
    assert unknown.status_code == 404 and unknown.get_json()["error"]["code"] == "not_found"
