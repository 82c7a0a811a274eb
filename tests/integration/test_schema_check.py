"""A database that was never migrated, or migrated by another version: every command that
works on it stops with one line saying what to do (``app.db.schema_problem``), instead of
a traceback ending in ``relation "packs" does not exist``."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from app import db
from tests.support.workers import REPO


@pytest.fixture
def empty_url(pg_admin_url: str) -> Iterator[str]:
    name = f"usher_empty_{uuid.uuid4().hex[:10]}"
    admin = make_url(pg_admin_url).set(drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    db.dispose_all()
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _usher(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "USHER_DATABASE_URL": url, "USHER_HOME": "/nonexistent"}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_schema_is_checked_against_this_versions_head(engine: Engine) -> None:
    assert db.schema_problem(engine) is None
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0023'"))
    older = db.schema_problem(engine)
    assert older is not None and "at revision 0023" in older and "usher db upgrade" in older
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    newer = db.schema_problem(engine)
    assert newer is not None and "newer than this Usher" in newer


@pytest.mark.parametrize("command", [["queues"], ["packs", "list"], ["worker"], ["web"]])
def test_a_database_never_migrated_is_one_line_saying_to_upgrade(
    empty_url: str, command: list[str]
) -> None:
    done = _usher(empty_url, *command)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: the database has no Usher schema yet: run `usher db upgrade`"
    ]
    # And once upgraded, the same command works (a listing; the servers would serve)
    if command == ["packs", "list"]:
        assert _usher(empty_url, "db", "upgrade").returncode == 0
        assert _usher(empty_url, *command).returncode == 0
