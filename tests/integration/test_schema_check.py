"""A database that was never migrated, or migrated by another version: every command that
works on it stops with one line saying what to do (``app.db.schema_problem``), instead of
a traceback ending in ``relation "packs" does not exist``."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from app import db
from tests.support import netns
from tests.support.flow import wait_until
from tests.support.workers import REPO

pytestmark = pytest.mark.processes


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serving_env(url: str, **more: str) -> dict[str, str]:
    base = {"PATH": "/usr/bin:/bin", "USHER_DATABASE_URL": url, "USHER_HOME": "/nonexistent"}
    return base | more


def test_a_serving_process_waits_for_the_database_then_stops_with_one_line(db_url: str) -> None:
    # Given a database URL nothing answers on
    url = make_url(db_url).set(host="127.0.0.1", port=_free_port())
    # When beat starts with a short wait for it
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "beat"],
        env=_serving_env(url.render_as_string(hide_password=False), USHER_START_WAIT_S="2"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then it said once that it waits, asked again for the wait, and stopped with one line
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 2, lines
    assert lines[0].startswith("waiting for the database: connection failed")
    assert lines[1].startswith("error: cannot reach the database (connection failed")


@pytest.mark.timeout(120)
def test_a_serving_process_starts_once_the_database_answers(db_url: str) -> None:
    # Given a migrated database behind a port that answers only later (Postgres restarting)
    real = make_url(db_url)
    port, web_port = _free_port(), _free_port()
    url = real.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    env = _serving_env(url, USHER_START_WAIT_S="60", USHER_WEB_PORT=str(web_port))
    web = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "web"],
        env=env,
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    proxy = netns.Proxy()
    try:
        # When the web starts, says it waits, and the database answers after that
        assert web.stderr is not None
        first = web.stderr.readline()
        assert first.startswith("waiting for the database"), first
        proxy.listen("127.0.0.1", port, to=real.port or 5432)
        # Then it serves
        wait_until(lambda: _answers(web_port), 60, what="the web to serve")
        assert web.poll() is None
    finally:
        web.terminate()
        web.wait(timeout=30)
        proxy.close()


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code < 500
    except httpx.HTTPError:
        return False
