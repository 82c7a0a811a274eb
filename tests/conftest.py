"""Shared fixtures: a real Postgres (local server or embedded), a broker, worker processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from app import config, db
from tests.support import brokers, workers

ADMIN_URL_ENV = "USHER_TEST_DATABASE_URL"
BROKER_ENV = "USHER_TEST_BROKER_URL"
# Directories whose every test starts processes (workers, beat, a browser) or times them.
PROCESS_DIRS = ("acceptance", "bench", "chaos")
NEW_INSTALLATION = (
    "UPDATE installation SET id = left(replace(CAST(gen_random_uuid() AS text), '-', ''), 12)"
)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A Postgres server to make test databases on: USHER_TEST_DATABASE_URL or an embedded one.

    The embedded server's data lives outside pytest's temporary tree, which another pytest
    session on the same machine may prune while this one still runs.
    """
    given = os.environ.get(ADMIN_URL_ENV)
    if given:
        yield given
        return
    home = Path(tempfile.mkdtemp(prefix="usher-test-pg-"))
    url = db.embedded_url(home)
    yield url
    db.stop_embedded(home)
    shutil.rmtree(home, ignore_errors=True)


def _psycopg_url(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def _admin(url: str) -> psycopg.Connection:
    return psycopg.connect(_psycopg_url(url), autocommit=True)


@pytest.fixture(scope="session")
def template_db(pg_admin_url: str) -> Iterator[str]:
    """A migrated database that each test's database is copied from."""
    name = f"usher_tpl_{uuid.uuid4().hex[:10]}"
    with _admin(pg_admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db.upgrade(make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False))
    yield name
    with _admin(pg_admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_database(pg_admin_url: str, template_db: str) -> Iterator[str]:
    """A new migrated database (a copy of the template) with an installation of its own;
    dropped afterwards."""
    name = f"usher_t_{uuid.uuid4().hex[:12]}"
    with _admin(pg_admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    url = make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    # A copy keeps the template's installation id: each test is an installation of its own,
    # with queues of its own on the run's broker namespace (tests/support/brokers.py).
    with psycopg.connect(_psycopg_url(pg_admin_url, name), autocommit=True) as conn:
        conn.execute(NEW_INSTALLATION)
    try:
        yield url
    finally:
        db.dispose_all()
        with _admin(pg_admin_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(pg_admin_url: str, template_db: str) -> Iterator[str]:
    """A fresh migrated database for this test alone."""
    with fresh_database(pg_admin_url, template_db) as url:
        yield url


@pytest.fixture(scope="session")
def broker_namespace() -> Iterator[str | None]:
    """The run's own vhost or Redis database on USHER_TEST_BROKER_URL; None for the embedded
    filesystem:// broker (each test has its own folder)."""
    given = os.environ.get(BROKER_ENV) or None
    if given is None:
        yield None
        return
    with brokers.namespace(given) as own:
        yield own


@pytest.fixture
def broker_url(broker_namespace: str | None) -> Iterator[str | None]:
    """The broker of one test: what the tests before it left there is gone."""
    yield broker_namespace
    if broker_namespace is not None:
        brokers.clean(broker_namespace)


@pytest.fixture
def settings(db_url: str, broker_url: str | None, tmp_path: Path) -> config.Settings:
    return config.load(
        database_url=db_url, broker_url=broker_url, home=tmp_path / "home", lease_s=6
    )


@pytest.fixture
def engine(settings: config.Settings) -> Engine:
    assert settings.database_url
    return db.engine_for(settings.database_url)


@pytest.fixture
def celery_app(settings: config.Settings) -> Iterator[object]:
    from app import celery as usher_celery

    app = usher_celery.create(settings)
    app.set_current()
    yield app
    app.close()


@pytest.fixture
def worker_pool(settings: config.Settings, tmp_path: Path) -> Iterator[workers.Pool]:
    pool = workers.Pool(settings, tmp_path / "logs")
    yield pool
    workers.tear_down(pool)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``processes`` every test that starts worker processes through ``worker_pool``
    or lives in a directory of such tests; a module that starts them otherwise says so in its
    ``pytestmark``. CI runs the unmarked tests two at a time, these one at a time."""
    for item in items:
        in_dir = Path(str(item.path)).parent.name in PROCESS_DIRS
        if in_dir or "worker_pool" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.processes)
