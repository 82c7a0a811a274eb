"""What a benchmark makes and leaves nothing of: a scratch database beside the configured
one, a scratch folder, a pack of no-op actions, and the broker queues of its actions."""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql as pg
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from app import config, db
from policies import packs

log = logging.getLogger(__name__)


def scratch_database(url: str) -> tuple[str, str]:
    """Create an empty database beside the configured one; returns (its URL, its name)."""
    name = f"usher_bench_{uuid.uuid4().hex[:8]}"
    admin = make_url(url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        # Not in bench.sql: a database name cannot be a bind parameter, so it is quoted here.
        conn.execute(pg.SQL("CREATE DATABASE {}").format(pg.Identifier(name)))
    return make_url(url).set(database=name).render_as_string(hide_password=False), name


def drop_database(url: str, name: str) -> None:
    admin = make_url(url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        # Not in bench.sql: a database name cannot be a bind parameter, so it is quoted here.
        conn.execute(pg.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pg.Identifier(name)))


@contextmanager
def scratch(settings: config.Settings) -> Iterator[tuple[str, Path]]:
    """A migrated scratch database and folder, dropped and left behind afterwards."""
    assert settings.database_url, "resolve the database URL before benchmarking"
    url, name = scratch_database(settings.database_url)
    folder = Path(tempfile.mkdtemp(prefix="usher-bench-"))
    try:
        db.upgrade(url)
        yield url, folder
    finally:
        db.dispose_all()
        drop_database(settings.database_url, name)


def load_pack(
    engine: Engine,
    folder: Path,
    actions: int,
    limit: int,
    handoff_limit: int = 0,
    listen: bool = False,
) -> str:
    """Actions ``noop0``.. of concurrency ``limit``; with ``handoff_limit``, also ``handoff``.
    ``listen``: a rule on ``usher.execution`` that matches no event, so every end writes its
    execution event (the trigger on) and nothing more runs: what execution events cost."""
    pack = f"bench{uuid.uuid4().hex[:6]}"
    root = folder / "packs" / pack
    (root / "actions").mkdir(parents=True)
    (root / "pack.yaml").write_text(f"name: {pack}\n")
    limits = {f"noop{i}": limit for i in range(actions)}
    if handoff_limit:
        limits["handoff"] = handoff_limit
    for name, concurrency in limits.items():
        (root / "actions" / f"{name}.yaml").write_text(
            f"name: {name}\nrunner: noop\npolicy: {{concurrency: {concurrency}}}\n"
        )
    if listen:
        (root / "rules").mkdir()
        (root / "rules" / "listen.yaml").write_text(
            "name: listen\ntrigger: usher.execution\ncriteria: {payload.status: never}\n"
            f"action: {pack}.noop0\n"
        )
    with db.unit_of_work(engine) as session:
        packs.load(session, root)
    return pack


def delete_queues(app: Any, names: Iterable[str]) -> None:
    """Delete broker queues (a benchmark's scratch actions), so none is left behind."""
    try:
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            for name in names:
                channel.queue_delete(name)
    except Exception:
        log.exception("could not delete the queues; delete them with the broker's tools")
