"""Search and re-runs: the executions list's filters (parameters, time, rule, requester),
each and together, paged, and their 400s; a re-run through the API (overrides merged,
``rerun_of``, 404, 422, 429), the command line and the dashboard's form."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from app import config, db
from policies import admission
from tests.support import packs
from tests.support.api import AUTH, TOKEN, csrf, signed_in
from tests.support.command import usher

pytestmark = pytest.mark.timeout(120)
SCHEMA = {
    "type": "object",
    "properties": {
        "host": {"type": "string"},
        "n": {"type": ["integer", "string"]},
        "on": {"type": "boolean"},
    },
    "additionalProperties": False,
}


@pytest.fixture
def settings(api_settings: config.Settings) -> config.Settings:
    return api_settings


@pytest.fixture
def ref(engine: Engine, tmp_path: Path) -> str:
    """An action whose line holds 4 (1 running): what is enqueued stays in the database."""
    policy = {"concurrency": 1, "max_queue_length": 4}
    name = packs.load(engine, tmp_path, [packs.action("job", "noop", policy, SCHEMA)])
    return f"{name}.job"


def _enqueue(
    engine: Engine, settings: config.Settings, ref: str, params: dict[str, Any], by: str
) -> int:
    with db.unit_of_work(engine) as session:
        return admission.enqueue(session, settings, ref, params, requested_by=by).execution_id


def _ids(client: FlaskClient, query: str) -> list[int]:
    answer = client.get(f"/api/v1/executions?{query}", headers=AUTH)
    assert answer.status_code == 200, answer.get_json()
    return [item["id"] for item in answer.get_json()["items"]]


@pytest.fixture
def seeded(engine: Engine, settings: config.Settings, ref: str) -> list[int]:
    """Four executions: db3/5/on by rule:p.r, db3/"5" by alice, db4/6 by rule:p.r, db3/7 by
    alice; the first two enqueued two days ago."""
    ids = [
        _enqueue(engine, settings, ref, {"host": "db3", "n": 5, "on": True}, "rule:p.r"),
        _enqueue(engine, settings, ref, {"host": "db3", "n": "5"}, "alice"),
        _enqueue(engine, settings, ref, {"host": "db4", "n": 6}, "rule:p.r"),
        _enqueue(engine, settings, ref, {"host": "db3", "n": 7}, "alice"),
    ]
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE execution_requests SET enqueued_at = now() - interval '2 days' "
                "WHERE id <= :id"
            ),
            {"id": ids[1]},
        )
    return ids


def test_each_filter_and_together(client: FlaskClient, seeded: list[int]) -> None:
    a, b, c, d = seeded
    # Parameters: the string, or the number/boolean it spells
    assert _ids(client, "param.host=db3") == [d, b, a]
    assert _ids(client, "param.n=5") == [b, a]
    assert _ids(client, "param.on=true") == [a]
    assert _ids(client, "param.host=db3&param.n=7") == [d]
    assert _ids(client, "param.host=db9") == []
    # Requester and rule
    assert _ids(client, "requested_by=alice") == [d, b]
    assert _ids(client, "rule=p.r") == [c, a]
    assert _ids(client, "rule=p.r&requested_by=alice") == []
    # Time: since <= enqueued_at < until
    assert _ids(client, "since=" + _ago(1)) == [d, c]
    assert _ids(client, "until=" + _ago(1)) == [b, a]
    # Together
    assert _ids(client, f"param.host=db3&rule=p.r&until={_ago(1)}") == [a]
    assert _ids(client, f"param.n=7&requested_by=alice&since={_ago(1)}") == [d]


def _ago(days: int) -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) - timedelta(days=days)).isoformat().replace("+00:00", "Z")


def test_paging_keeps_the_filters(client: FlaskClient, seeded: list[int]) -> None:
    a, b, _, d = seeded
    first = client.get("/api/v1/executions?param.host=db3&limit=2", headers=AUTH).get_json()
    assert [i["id"] for i in first["items"]] == [d, b]
    assert _ids(client, f"param.host=db3&limit=2&before={first['next']}") == [a]


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("&".join(f"param.k{i}=v" for i in range(6)), "param.k5"),
        ("param.host=" + "x" * 201, "param.host"),
        ("param.=x", "param."),
        ("param." + "k" * 101 + "=x", "a name of at most 100"),
        ("param.host=a&param.host=b", "given twice"),
        ("since=yesterday", "since"),
    ],
)
def test_bad_filters_are_400_naming_them(client: FlaskClient, query: str, named: str) -> None:
    answer = client.get(f"/api/v1/executions?{query}", headers=AUTH)
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "invalid_request"
    assert named in answer.get_json()["error"]["message"]


def test_rerun_merges_the_overrides(client: FlaskClient, engine: Engine, seeded: list[int]) -> None:
    a = seeded[0]
    answer = client.post(
        f"/api/v1/executions/{a}/rerun", json={"parameters": {"host": "db9"}}, headers=AUTH
    )
    assert answer.status_code == 202, answer.get_json()
    body = answer.get_json()
    assert body["rerun_of"] == a and body["status"] == "queued"
    shown = client.get(f"/api/v1/executions/{body['id']}", headers=AUTH).get_json()
    assert shown["parameters"] == {"host": "db9", "n": 5, "on": True}
    assert shown["rerun_of"] == a
    assert shown["requested_by"] is not None
    assert _ids(client, "param.host=db9") == [body["id"]]


def test_rerun_refusals(client: FlaskClient, seeded: list[int]) -> None:
    a = seeded[0]
    bad = client.post(
        f"/api/v1/executions/{a}/rerun", json={"parameters": {"on": "yes"}}, headers=AUTH
    )
    assert bad.status_code == 422
    assert bad.get_json()["error"]["code"] == "invalid_parameters"
    unknown = client.post("/api/v1/executions/999999/rerun", json={}, headers=AUTH)
    assert unknown.status_code == 404
    # The line holds 4 (one of them scheduled): a fifth waiting one does not fit
    full = client.post(f"/api/v1/executions/{a}/rerun", json={}, headers=AUTH)
    assert full.status_code == 202
    full = client.post(f"/api/v1/executions/{a}/rerun", json={}, headers=AUTH)
    assert full.status_code == 429
    assert full.get_json()["error"]["code"] == "queue_full"


@pytest.mark.usefixtures("cli_env")
def test_cli_rerun_and_list(engine: Engine, seeded: list[int]) -> None:
    a = seeded[0]
    shown = json.loads(usher("executions", "rerun", str(a), "host=db8", "n=9", "--json"))
    assert shown["rerun_of"] == a
    listed = json.loads(usher("executions", "list", "--param", "host=db8", "--json"))
    assert [r["id"] for r in listed] == [shown["id"]]
    assert listed[0]["parameters"] == {"host": "db8", "n": 9, "on": True}
    assert listed[0]["rerun_of"] == a


def test_dashboard_rerun_form(
    settings: config.Settings, celery_app: Any, engine: Engine, seeded: list[int]
) -> None:
    a = seeded[0]
    admin = signed_in(settings, celery_app, TOKEN)
    page = f"/executions/{a}"
    html = admin.get(page).get_data(as_text=True)
    assert 'data-testid="rerun-parameters"' in html and '"host": "db3"' in html
    token = csrf(admin, page)
    edited = json.dumps({"host": "db7", "n": 5, "on": True})
    answer = admin.post(
        f"/executions/{a}/rerun", data={"csrf_token": token, "parameters": edited, "next": page}
    )
    assert answer.status_code == 303
    new_id = int(re.search(r"/executions/(\d+)$", answer.headers["Location"]).group(1))  # type: ignore[union-attr]
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT parameters, rerun_of FROM executions WHERE id = :id"), {"id": new_id}
        ).one()
    assert row.parameters["host"] == "db7" and row.rerun_of == a
    assert "Re-run of" in admin.get(f"/executions/{new_id}").get_data(as_text=True)
    # Parameters the schema refuses: said on the page, nothing created
    refused = admin.post(
        f"/executions/{a}/rerun",
        data={"csrf_token": token, "parameters": '{"on": "yes"}', "next": page},
        follow_redirects=True,
    )
    assert "on" in refused.get_data(as_text=True)
    # Without the CSRF token: refused
    forged = admin.post(f"/executions/{a}/rerun", data={"parameters": "{}"})
    assert forged.status_code == 400


def test_dashboard_executions_page_filters(
    settings: config.Settings, celery_app: Any, seeded: list[int]
) -> None:
    a, b, c, d = seeded
    reader = signed_in(settings, celery_app, TOKEN)

    def shown(query: str) -> list[int]:
        answer = reader.get(f"/executions?{query}")
        assert answer.status_code == 200, answer.get_data(as_text=True)
        return [int(i) for i in re.findall(r'href="/executions/(\d+)"', answer.get_data(True))]

    assert shown("") == [d, c, b, a]
    assert shown("params=host%3Ddb3+n%3D5") == [b, a]
    assert shown("param.host=db3&requested_by=alice") == [d, b]
    assert shown(f"rule=p.r&since={_ago(1)}") == [c]
    page = reader.get("/executions?params=host%3Ddb3").get_data(as_text=True)
    assert 'value="host=db3"' in page
    assert reader.get("/executions?since=yesterday").status_code == 400
    assert (
        reader.get("/executions?" + "&".join(f"param.k{i}=v" for i in range(6))).status_code == 400
    )
