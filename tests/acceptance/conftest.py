"""The real app served by waitress on a free local port, and a headless Debian chromium.

Browser tests skip (with the reason) when /usr/bin/chromium or the playwright package is
missing; ``playwright install`` is never needed, the system browser is driven directly.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

import web
from app import config
from app.cli import serve as cli_serve

TOKEN = "dashboard-admin-token"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def settings(db_url: str, broker_url: str | None, tmp_path: Path) -> config.Settings:
    """The shared settings plus an admin API token (overrides the root conftest's), and
    session cookies that travel over the tests' plain http://."""
    return config.load(
        database_url=db_url,
        broker_url=broker_url,
        home=tmp_path / "home",
        lease_s=6,
        api_token=TOKEN,
        insecure_cookies=True,
    )


@pytest.fixture
def app(settings: config.Settings, celery_app: Any) -> Flask:
    return web.create_app(settings, celery_app)


@pytest.fixture
def live_server(app: Flask, settings: config.Settings) -> Iterator[str]:
    """The app under waitress, as ``usher web`` serves it, in a background thread; yields
    its base URL."""
    server = cli_serve.create_server(app, settings.max_body_bytes, "127.0.0.1", 0, threads=4)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()
    # The browser's keep-alive connections keep waitress's loop running: close them too,
    # or the loop (and this teardown) waits out the join's timeout.
    for channel in list(server._map.values()):
        channel.close()
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


def _page(browser: Any, width: int, height: int) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": width, "height": height}, locale="en-GB")
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    yield from _page(browser, 1440, 900)


@pytest.fixture
def laptop(browser: Any) -> Iterator[Any]:
    """A page in a window of a common laptop's width, which every page must fit."""
    yield from _page(browser, 1280, 800)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go (git-ignored); the laptop-sized ``dashboard-*.png`` of
    test_dashboard_pages are copied to docs/images by hand when the pages change."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
