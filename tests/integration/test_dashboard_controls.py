"""The action page's controls through Flask's test client against a real Postgres: pause and
resume, live limits and "Cancel all waiting" with an admin session (flash messages, refusals
as flashes); disabled and refused (403) with a read-only one; refused (400) without the CSRF
token. The bulk cancel also through ``POST /api/v1/actions/<ref>/cancel-waiting`` and
``usher actions cancel-waiting``. (In a browser: tests/acceptance/test_dashboard_controls.py.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from app import config, db, tokens
from tests.support import flow, invariants, packs
from tests.support.api import AUTH, TOKEN, csrf, signed_in
from tests.support.command import usher

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def settings(dashboard_settings: config.Settings) -> config.Settings:
    return dashboard_settings


@pytest.fixture
def ref(engine: Engine, tmp_path: Path) -> str:
    """An action with a line per host, one slot each."""
    policy = {"concurrency": 1, "partition_by": ["host"]}
    name = packs.load(engine, tmp_path, [packs.action("a", "noop", policy)])
    return f"{name}.a"


def _submit(engine: Engine, settings: config.Settings, ref: str, host: str, n: int) -> list[int]:
    return flow.submit(engine, settings, None, ref, [{"host": host}] * n)


def _statuses(engine: Engine, ids: list[int]) -> list[str]:
    return [flow.status(engine, i) for i in ids]


def _paused(engine: Engine, ref: str) -> bool:
    with engine.connect() as conn:
        query = text("SELECT paused_at IS NOT NULL FROM actions WHERE ref = :ref")
        return bool(conn.execute(query, {"ref": ref}).scalar_one())


def _post(client: FlaskClient, path: str, page: str, **form: str) -> str:
    """Post a control's form (its CSRF token from ``page``); the page it leads back to."""
    data = {"csrf_token": csrf(client, page), "next": page, **form}
    done = client.post(path, data=data, follow_redirects=True)
    assert done.status_code == 200
    return done.get_data(as_text=True)


def test_an_admin_pauses_resumes_and_raises_the_limit(
    engine: Engine, settings: config.Settings, celery_app: Any, ref: str
) -> None:
    # Given three requests on one line of one slot: one scheduled, two waiting
    ids = _submit(engine, settings, ref, "x", 3)
    assert _statuses(engine, ids) == ["scheduled", "queued", "queued"]
    admin = signed_in(settings, celery_app, TOKEN)
    page = f"/actions/{ref}"
    html = admin.get(page).get_data(as_text=True)
    assert 'data-testid="pause"' in html and 'data-testid="cancel-waiting"' in html
    # When it is paused, its limit raised to 3, then resumed
    html = _post(admin, f"/actions/{ref}/pause", page)
    assert f"{ref} paused: nothing more is granted; running work finishes." in html
    assert _paused(engine, ref) and 'data-testid="resume"' in html
    html = _post(admin, f"/actions/{ref}/limits", page, concurrency="3", max_queue_length="")
    assert f"{ref}: concurrency 3 until its pack is loaded again; nothing granted now." in html
    assert _statuses(engine, ids) == ["scheduled", "queued", "queued"]  # paused: none start
    html = _post(admin, f"/actions/{ref}/resume", page)
    # Then the waiting ones are granted as it resumes
    assert f"{ref} resumed: 2 granted now." in html and not _paused(engine, ref)
    assert _statuses(engine, ids) == ["scheduled"] * 3
    assert invariants.counter_mismatches(engine) == []


def test_a_refused_control_is_a_flash_on_the_page(
    engine: Engine, settings: config.Settings, celery_app: Any, ref: str
) -> None:
    admin = signed_in(settings, celery_app, TOKEN)
    page = f"/actions/{ref}"
    # A limit out of bounds, or not a number: said where the form was, nothing changed
    for given in ("0", "many"):
        html = _post(admin, f"/actions/{ref}/limits", page, concurrency=given)
        assert re.search(r'class="flash error"[^>]*>[^<]*concurrency', html), given
    # Nothing given at all
    html = _post(admin, f"/actions/{ref}/limits", page)
    assert 'class="flash error"' in html and "give one or more of" in html
    # A total on an action that has none
    html = _post(admin, f"/actions/{ref}/limits", page, total_concurrency="2")
    assert 'class="flash error"' in html
    # An unknown action
    html = _post(admin, "/actions/nope.none/pause", page)
    assert "no action named &#39;nope.none&#39;" in html
    with engine.connect() as conn:
        policy = conn.execute(text("SELECT policy FROM actions WHERE ref = :r"), {"r": ref})
        assert policy.scalar_one()["concurrency"] == 1


def test_cancel_all_waiting_cancels_exactly_the_queued_ones_of_the_line(
    engine: Engine, settings: config.Settings, celery_app: Any, ref: str
) -> None:
    # Given two lines: x with one scheduled and two waiting, y with one scheduled and one
    xs = _submit(engine, settings, ref, "x", 3)
    ys = _submit(engine, settings, ref, "y", 2)
    admin = signed_in(settings, celery_app, TOKEN)
    page = f"/actions/{ref}?line=host%3Dx"
    html = admin.get(page).get_data(as_text=True)
    assert re.search(
        r'data-confirm="Cancel every execution waiting in the line host=x \(2 now\)', html
    )
    # When the admin cancels all waiting of line x
    html = _post(admin, f"/actions/{ref}/cancel-waiting", page, partition="host=x")
    # Then exactly its two queued ones are cancelled, by the admin; y is untouched
    assert f"{ref} [host=x]: 2 waiting execution(s) cancelled." in html
    assert _statuses(engine, xs) == ["scheduled", "cancelled", "cancelled"]
    assert _statuses(engine, ys) == ["scheduled", "queued"]
    with engine.connect() as conn:
        by = conn.execute(
            text("SELECT DISTINCT cancelled_by FROM executions WHERE id = ANY(:ids)"),
            {"ids": xs[1:]},
        ).scalars()
        assert list(by) == [tokens.ADMIN_NAME]
    assert invariants.counter_mismatches(engine) == []
    # Again: nothing is left to cancel
    html = _post(admin, f"/actions/{ref}/cancel-waiting", page, partition="host=x")
    assert f"{ref} [host=x]: 0 waiting execution(s) cancelled." in html


def test_a_read_only_session_sees_the_controls_disabled_and_changes_nothing(
    engine: Engine, settings: config.Settings, celery_app: Any, ref: str
) -> None:
    ids = _submit(engine, settings, ref, "x", 2)
    with db.unit_of_work(engine) as session:
        reader_token = tokens.create(session, "reader", True)
    reader = signed_in(settings, celery_app, reader_token)
    page = f"/actions/{ref}"
    html = reader.get(page).get_data(as_text=True)
    for control in ("pause", "set-limits", "cancel-waiting"):
        assert re.search(rf'data-testid="{control}"\s+disabled title="read-only token"', html)
    token = csrf(reader, page)
    for path, form in (
        ("pause", {}),
        ("limits", {"concurrency": "5"}),
        ("cancel-waiting", {"partition": "host=x"}),
    ):
        refused = reader.post(f"/actions/{ref}/{path}", data={"csrf_token": token, **form})
        assert refused.status_code == 403
        assert "read-only" in refused.get_data(as_text=True)
    assert not _paused(engine, ref)
    assert _statuses(engine, ids) == ["scheduled", "queued"]


def test_a_control_without_the_csrf_token_is_refused(
    engine: Engine, settings: config.Settings, celery_app: Any, ref: str
) -> None:
    ids = _submit(engine, settings, ref, "x", 2)
    admin = signed_in(settings, celery_app, TOKEN)
    for path in ("pause", "limits", "cancel-waiting"):
        refused = admin.post(
            f"/actions/{ref}/{path}", data={"partition": "host=x", "concurrency": "4"}
        )
        assert refused.status_code == 400
        assert "The form could not be trusted" in refused.get_data(as_text=True)
    assert not _paused(engine, ref)
    assert _statuses(engine, ids) == ["scheduled", "queued"]


def test_the_api_and_the_command_line_cancel_a_lines_waiting_ones(
    engine: Engine,
    settings: config.Settings,
    celery_app: Any,
    ref: str,
    client: FlaskClient,
    cli_env: None,
) -> None:
    xs = _submit(engine, settings, ref, "x", 3)
    ys = _submit(engine, settings, ref, "y", 3)
    # The API: one line by ?partition=
    done = client.post(f"/api/v1/actions/{ref}/cancel-waiting?partition=host%3Dy", headers=AUTH)
    assert done.status_code == 200
    assert done.get_json() == {"action": ref, "partition": "host=y", "cancelled": ys[1:]}
    assert _statuses(engine, ys) == ["scheduled", "cancelled", "cancelled"]
    missing = client.post("/api/v1/actions/nope.none/cancel-waiting", headers=AUTH)
    assert missing.status_code == 404
    # The command line: every line of the action
    out = usher("actions", "cancel-waiting", ref)
    assert f"{ref}: 2 waiting cancelled" in out
    assert _statuses(engine, xs) == ["scheduled", "cancelled", "cancelled"]
    assert invariants.counter_mismatches(engine) == []
