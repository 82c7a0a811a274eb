"""The web API and the dashboard in tests: the admin token of a test's settings, bearer
headers, and a dashboard session signed in through the login form."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

import web
from app import config

TOKEN = "admin-token-for-tests"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of a request made with ``token``."""
    return {"Authorization": f"Bearer {token}"}


AUTH = bearer(TOKEN)


def settings_with_token(
    db_url: str, broker_url: str | None, tmp_path: Path, **more: Any
) -> config.Settings:
    """The root conftest's settings plus the admin token TOKEN (and ``more``)."""
    return config.load(
        database_url=db_url,
        broker_url=broker_url,
        home=tmp_path / "home",
        api_token=TOKEN,
        lease_s=6,
        **more,
    )


def csrf(client: FlaskClient, path: str) -> str:
    """The CSRF token of the form on the page at ``path``."""
    found = CSRF.search(client.get(path).get_data(as_text=True))
    assert found, path
    return found.group(1)


def log_in(client: FlaskClient, token: str) -> None:
    """Sign ``client`` in to the dashboard with ``token`` through the login form."""
    data = {"token": token, "csrf_token": csrf(client, "/login"), "next": "/"}
    assert client.post("/login", data=data).status_code == 303


def signed_in(settings: config.Settings, celery_app: Any, token: str) -> FlaskClient:
    """A test client of a new app with a dashboard session of ``token``."""
    client = web.create_app(settings, celery_app).test_client()
    log_in(client, token)
    return client
