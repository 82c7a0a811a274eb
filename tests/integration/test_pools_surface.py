"""The operator's surface of levels against a real Postgres, no workers: ``usher pools
list|set`` and the levels table of ``usher queues``; ``GET /api/v1/pools[/<ref>]``, ``PATCH
/api/v1/pools/<ref>``, the total and pools of queue-stats and the live total of ``PATCH
/api/v1/actions/<ref>/policy``; the dashboard's pools page and action page; the metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text

from app import cli, config, db, tokens
from app.cli.client import ApiError
from app.errors import NotFound
from policies import control, levels, pools
from policies import packs as app_packs
from tests.support.api import AUTH, TOKEN, bearer, csrf, signed_in
from tests.support.command import usher
from tests.support.flow import WaitingOnALock, submit
from tests.support.packs import load_folder, write_folder
from web import level_schemas, schemas

pytestmark = pytest.mark.timeout(90)
PACK = "shop"
# Two actions share the pool db (1 slot); restart has a total of 1 over its hosts, no pool.
ACTIONS = [
    {"name": "write", "runner": "noop", "policy": {"concurrency": 5, "pools": ["db"]}},
    {"name": "report", "runner": "noop", "policy": {"concurrency": 5, "pools": ["db"]}},
    {
        "name": "restart",
        "runner": "noop",
        "policy": {"concurrency": 1, "partition_by": ["host"], "total_concurrency": 1},
    },
]


@pytest.fixture
def settings(dashboard_settings: config.Settings) -> config.Settings:
    return dashboard_settings


def _write(tmp_path: Path) -> Path:
    return write_folder(tmp_path / PACK, {"name": PACK, "pools": {"db": 1}}, ACTIONS)


def _load(engine: Engine, tmp_path: Path) -> None:
    load_folder(engine, _write(tmp_path))


@pytest.fixture
def loaded(engine: Engine, settings: config.Settings, tmp_path: Path) -> dict[str, list[int]]:
    """The pack, and waiting work: three writes and a report behind the pool's one slot, two
    restarts on two hosts behind the total's one."""
    _load(engine, tmp_path)
    return {
        "write": submit(engine, settings, None, f"{PACK}.write", [{}] * 3),
        "report": submit(engine, settings, None, f"{PACK}.report", [{}]),
        "restart": submit(
            engine, settings, None, f"{PACK}.restart", [{"host": "a"}, {"host": "b"}]
        ),
    }


def _statuses(engine: Engine, ids: list[int]) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT status FROM executions WHERE id = ANY(:ids) ORDER BY id"), {"ids": ids}
        )
        return list(rows.scalars())


@pytest.mark.parametrize("change", ["pool", "total"])
def test_a_live_change_waits_for_a_pack_load_holding_the_group_and_holds_nothing(
    engine: Engine, settings: config.Settings, tmp_path: Path, loaded: Any, change: str
) -> None:
    def live_change() -> None:
        with db.unit_of_work(engine) as session:
            if change == "pool":
                pools.set_limit(session, settings, "shop.db", 2)
            else:
                control.update_policy(session, settings, "shop.write", {"concurrency": 4})

    # Given a pack load that has taken the group's lock (its first step)
    with db.unit_of_work(engine) as session:
        levels.lock(session, [pools.group_of_action(session, "shop.write")])
        # When a live change of the group starts, it waits for that lock, holding no row
        other = WaitingOnALock(engine, live_change)
        # Then the load still writes the actions and the pool (no deadlock)
        app_packs.load(session, _write(tmp_path))
    assert other.finished() == []


# --- the command line ---------------------------------------------------------------------------


def _row(table: str, first: str) -> str:
    return next(line for line in table.splitlines() if first in line)


@pytest.mark.usefixtures("cli_env")
def test_usher_pools_lists_and_sets_a_limit_and_queues_shows_the_levels(
    engine: Engine, loaded: dict[str, list[int]], tmp_path: Path
) -> None:
    # The pool: one slot held (the first write), the other writes and the report waiting
    (pool,) = json.loads(usher("pools", "list", "--json"))
    assert pool == {
        "ref": "shop.db",
        "pack": PACK,
        "limit": 1,
        "pack_limit": 1,
        "live": False,
        "active": 1,
        "waiting": 3,
        "actions": ["shop.report", "shop.write"],
    }
    row = _row(usher("pools", "list"), "shop.db")
    assert re.search(r"│\s+1\s+│\s+1\s+│\s+3\s+│ shop.report, shop.write", row), row
    # usher queues: the lines, then each action's total and pools
    queues = usher("queues")
    assert "levels above the lines" in queues
    assert re.search(r"shop.restart\s+│ total\s+│\s+1/1", _row(queues, "│ total")), queues
    assert re.search(r"shop.write\s+│ pool shop.db\s+│\s+1/1", queues), queues
    listed = {(r["action_ref"], r["partition"]): r for r in json.loads(usher("queues", "--json"))}
    assert listed[("shop.restart", "host=a")]["total"] == {"limit": 1, "active": 1, "live": False}
    assert listed[("shop.write", "")]["pools"] == [
        {"ref": "shop.db", "limit": 1, "active": 1, "live": False}
    ]
    assert listed[("shop.write", "")]["total"] is None
    # A raised limit grants the oldest waiting request of the pool at once
    said = usher("pools", "set", "shop.db", "--limit", "2")
    assert "shop.db: limit 2 (live, files 1), 2 active, 2 waiting, 1 granted now" in said
    assert _statuses(engine, loaded["write"]) == ["scheduled", "scheduled", "queued"]
    assert "2 (live, files 1)" in _row(usher("pools", "list"), "shop.db")
    assert re.search(r"shop.write\s+│ pool shop.db\s+│\s+2/2 \(live\)", usher("queues"))
    # A load of the pack puts pack.yaml's limit back
    _load(engine, tmp_path)
    (pool,) = json.loads(usher("pools", "list", "--json"))
    assert (pool["limit"], pool["live"], pool["active"]) == (1, False, 2)
    # Refusals: an unknown pool names the known ones; a limit out of bounds is click's
    with pytest.raises(ApiError, match=r"no pool named 'shop\.nope'; the pools are shop\.db") as no:
        CliRunner().invoke(
            cli.main, ["pools", "set", "shop.nope", "--limit", "2"], catch_exceptions=False
        )
    assert no.value.code == NotFound.code
    bad = CliRunner().invoke(cli.main, ["pools", "set", "shop.db", "--limit", "0"])
    assert bad.exit_code == 2 and "--limit" in bad.output


@pytest.mark.usefixtures("cli_env")
def test_usher_actions_set_changes_a_total_live(
    engine: Engine, loaded: dict[str, list[int]]
) -> None:
    said = usher("actions", "set", "shop.restart", "--total-concurrency", "2")
    assert "1 granted now" in said
    assert _statuses(engine, loaded["restart"]) == ["scheduled", "scheduled"]
    assert re.search(r"│ total\s+│\s+2/2 \(live\)", usher("queues"))


# --- the API ------------------------------------------------------------------------------------


def test_the_api_lists_shows_and_sets_pools(
    client: FlaskClient, engine: Engine, loaded: dict[str, list[int]]
) -> None:
    with db.unit_of_work(engine) as session:
        reader = tokens.create(session, "reader", True)
    # Any token reads
    listed = client.get("/api/v1/pools", headers=bearer(reader))
    assert listed.status_code == 200
    items = level_schemas.Pools.model_validate(listed.get_json()).items
    assert [(p.ref, p.limit, p.active, p.waiting, p.live) for p in items] == [
        ("shop.db", 1, 1, 3, False)
    ]
    shown = client.get("/api/v1/pools/shop.db", headers=bearer(reader))
    assert shown.status_code == 200 and shown.get_json() == listed.get_json()["items"][0]
    missing = client.get("/api/v1/pools/shop.nope", headers=bearer(reader))
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
    assert client.get("/api/v1/pools").status_code == 401
    # A write needs an admin token, and a limit within bounds
    url = "/api/v1/pools/shop.db"
    forbidden = client.patch(url, json={"limit": 3}, headers=bearer(reader))
    assert forbidden.status_code == 403 and forbidden.get_json()["error"]["code"] == "forbidden"
    for body in ({"limit": 0}, {"limit": 10_001}, {"limit": "2"}, {"limit": 2.0}, {}, {"max": 2}):
        bad = client.patch(url, json=body, headers=AUTH)
        assert bad.status_code == 400, body
        assert bad.get_json()["error"]["code"] == "invalid_request", body
    unknown = client.patch("/api/v1/pools/shop.nope", json={"limit": 2}, headers=AUTH)
    assert (
        unknown.status_code == 404
        and "no pool named 'shop.nope'" in unknown.get_json()["error"]["message"]
    )
    assert _statuses(engine, loaded["write"] + loaded["report"]) == [
        "scheduled",
        "queued",
        "queued",
        "queued",
    ]
    # A raised limit grants at once, oldest request first across both actions
    raised = client.patch(url, json={"limit": 3}, headers=AUTH)
    assert raised.status_code == 200
    pool = level_schemas.Pool.model_validate(raised.get_json())
    assert (pool.limit, pool.pack_limit, pool.live, pool.active, pool.waiting) == (3, 1, True, 3, 1)
    assert _statuses(engine, loaded["write"] + loaded["report"]) == [
        "scheduled",
        "scheduled",
        "scheduled",
        "queued",
    ]
    # A lowered one grants nothing more; running work keeps its slots
    lowered = client.patch(url, json={"limit": 1}, headers=AUTH).get_json()
    assert (lowered["limit"], lowered["active"], lowered["waiting"]) == (1, 3, 1)


def test_queue_stats_carry_the_total_and_pools_and_a_total_changes_live(
    client: FlaskClient, engine: Engine, loaded: dict[str, list[int]]
) -> None:
    auth = AUTH
    write = client.get("/api/v1/actions/shop.write/queue-stats", headers=auth).get_json()
    stats = schemas.QueueStats.model_validate(write)
    assert stats.total is None
    assert [(p.ref, p.limit, p.active) for p in stats.pools] == [("shop.db", 1, 1)]
    restart = client.get("/api/v1/actions/shop.restart/queue-stats", headers=auth).get_json()
    assert restart["total"] == {"limit": 1, "active": 1, "live": False}
    assert restart["pools"] == []
    # The action list carries them too
    actions = {a["ref"]: a for a in client.get("/api/v1/actions", headers=auth).get_json()["items"]}
    assert actions["shop.restart"]["queue_stats"]["total"] == restart["total"]
    assert actions["shop.report"]["queue_stats"]["pools"] == write["pools"]
    # The live policy change takes total_concurrency: raised, the other host is granted at once
    changed = client.patch(
        "/api/v1/actions/shop.restart/policy", json={"total_concurrency": 2}, headers=auth
    )
    assert changed.status_code == 200
    assert changed.get_json()["total"] == {"limit": 2, "active": 2, "live": True}
    assert _statuses(engine, loaded["restart"]) == ["scheduled", "scheduled"]
    shown = client.get("/api/v1/actions/shop.restart", headers=auth).get_json()
    assert shown["live_policy"] == {"total_concurrency": 2}
    # An action without a total in its files has none to change; out of bounds is refused
    none = client.patch(
        "/api/v1/actions/shop.write/policy", json={"total_concurrency": 2}, headers=auth
    )
    assert (
        none.status_code == 400
        and "has no total_concurrency" in none.get_json()["error"]["message"]
    )
    bad = client.patch(
        "/api/v1/actions/shop.restart/policy", json={"total_concurrency": 0}, headers=auth
    )
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid_request"


def test_metrics_carry_each_level_active_and_limit(
    client: FlaskClient, loaded: dict[str, list[int]]
) -> None:
    client.patch("/api/v1/pools/shop.db", json={"limit": 2}, headers=AUTH)
    response = client.get("/metrics")
    assert response.status_code == 200
    samples = {
        (s.name, s.labels["kind"], s.labels["ref"]): s.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        if family.name.startswith("usher_level_")
        for s in family.samples
    }
    assert samples == {
        ("usher_level_active", "pool", "shop.db"): 2.0,
        ("usher_level_limit", "pool", "shop.db"): 2.0,
        ("usher_level_active", "total", "shop.restart"): 1.0,
        ("usher_level_limit", "total", "shop.restart"): 1.0,
    }


# --- the dashboard ------------------------------------------------------------------------------


def test_the_dashboard_lists_pools_and_sets_a_limit_with_an_admin_session(
    settings: config.Settings, celery_app: Any, engine: Engine, loaded: dict[str, list[int]]
) -> None:
    admin = signed_in(settings, celery_app, TOKEN)
    page = admin.get("/pools").get_data(as_text=True)
    assert 'aria-current="page">Pools</a>' in page
    row = re.search(r'<tr data-pool="shop.db">.*?</tr>', page, re.S)
    assert row and re.search(r"1 / 1\s*</td>", row.group(0)) and "live override" not in row.group(0)
    assert "shop.report" in row.group(0) and "shop.write" in row.group(0)
    # Without the CSRF token the form is refused
    assert admin.post("/pools/shop.db/limit", data={"limit": "2"}).status_code == 400
    form = {"limit": "2", "csrf_token": csrf(admin, "/pools"), "next": "/pools"}
    done = admin.post("/pools/shop.db/limit", data=form, follow_redirects=True)
    assert done.status_code == 200
    html = done.get_data(as_text=True)
    assert "Pool shop.db: limit 2 until its pack is loaded again; 1 granted now." in html
    row = re.search(r'<tr data-pool="shop.db">.*?</tr>', html, re.S)
    assert row and "2 / 2" in row.group(0) and "live override" in row.group(0)
    assert _statuses(engine, loaded["write"]) == ["scheduled", "scheduled", "queued"]
    # A bad limit is said where the form was
    form["limit"] = "many"
    refused = admin.post("/pools/shop.db/limit", data=form, follow_redirects=True)
    assert "limit" in refused.get_data(as_text=True) and refused.status_code == 200
    # The action page shows the levels it takes
    action = admin.get("/actions/shop.write").get_data(as_text=True)
    level = re.search(r'<tr data-testid="level-shop.db">.*?</tr>', action, re.S)
    assert level and "2 / 2" in level.group(0)
    restart = admin.get("/actions/shop.restart").get_data(as_text=True)
    total = re.search(r'<tr data-testid="level-total">.*?</tr>', restart, re.S)
    assert total and "1 / 1" in total.group(0)
    # A read-only session sees the page, its form disabled, and may not post it
    with db.unit_of_work(engine) as session:
        reader_token = tokens.create(session, "reader", True)
    reader = signed_in(settings, celery_app, reader_token)
    page = reader.get("/pools").get_data(as_text=True)
    assert re.search(r'data-testid="set-shop.db"\s+disabled', page)
    form["csrf_token"], form["limit"] = csrf(reader, "/pools"), "3"
    assert reader.post("/pools/shop.db/limit", data=form).status_code == 403
