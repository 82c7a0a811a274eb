"""Fixtures of the integration tests beside the root conftest's: settings for a test that
calls the API or signs in to the dashboard, the web app, its test client and waitress in
front of it, and the command line pointed at the test's own database.

A module whose tests call the API takes the admin token's settings as its ``settings``, so
that every fixture here (and the root conftest's engine, celery_app and workers) uses them::

    @pytest.fixture
    def settings(api_settings: config.Settings) -> config.Settings:
        return api_settings
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

import web
from app import config
from app.cli import serve as cli_serve
from tests.support import api


@pytest.fixture
def api_settings(db_url: str, broker_url: str | None, tmp_path: Path) -> config.Settings:
    """The root conftest's settings plus the admin API token ``api.TOKEN``."""
    return api.settings_with_token(db_url, broker_url, tmp_path)


@pytest.fixture
def dashboard_settings(db_url: str, broker_url: str | None, tmp_path: Path) -> config.Settings:
    """``api_settings`` with session cookies that travel over the test client's http://."""
    return api.settings_with_token(db_url, broker_url, tmp_path, insecure_cookies=True)


@pytest.fixture
def app(settings: config.Settings, celery_app: Any) -> Flask:
    return web.create_app(settings, celery_app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def served(app: Flask, settings: config.Settings) -> Iterator[int]:
    """The app behind waitress, configured as ``usher web`` runs it; yields the port. Two
    request threads, or the app's ``USHER_TEST_THREADS``."""
    threads = app.config.get("USHER_TEST_THREADS", 2)
    server = cli_serve.create_server(app, settings.max_body_bytes, "127.0.0.1", 0, threads)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    yield server.effective_port
    server.close()
    thread.join(timeout=10)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, settings: config.Settings) -> None:
    """Point the command at this test's database, broker and home, and nothing else."""
    for name in list(os.environ):
        if name.startswith("USHER_"):
            monkeypatch.delenv(name)
    assert settings.database_url
    monkeypatch.setenv("USHER_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("USHER_HOME", str(settings.home))
    if settings.broker_url:
        monkeypatch.setenv("USHER_BROKER_URL", settings.broker_url)
