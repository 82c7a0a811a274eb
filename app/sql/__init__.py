"""Usher's SQL by name: every statement lives in a ``.sql`` file, once.

A file holds named blocks, each opened by a line ``-- name: some_name``; the comment lines
that follow it say why the statement is written so. ``query(name)`` is the statement for
SQLAlchemy (``:param`` placeholders), ``raw(name)`` the text for the workers' psycopg fast
path (``%(param)s`` placeholders, ``app.db.Hot``). The ground floor's, the policies', the
tasks' and the web's statements live in this package, the benchmark's in its own package.

``functions.sql`` is not read here: it is the current PL/pgSQL, loaded by the migrations
(``migrations/versions/0008_*``), and a test checks a migrated database against it.

aiosql parses the same format but calls the driver itself; our statements run on a
SQLAlchemy session or on a raw psycopg connection, so only the text is needed.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any

from sqlalchemy import TextClause, text

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
FUNCTIONS = "functions.sql"


def parse(source: str, origin: str) -> dict[str, str]:
    """The named blocks of one file's text: name -> statement."""
    found: dict[str, str] = {}
    pieces = _NAME.split(source)
    if pieces[0].strip() and not all(
        line.startswith("--") for line in pieces[0].strip().splitlines()
    ):
        raise ValueError(f"{origin}: SQL before the first '-- name:' line")
    for name, body in zip(pieces[1::2], pieces[2::2], strict=True):
        if name in found:
            raise ValueError(f"{origin}: the name {name} is given twice")
        statement = body.strip()
        if not statement:
            raise ValueError(f"{origin}: {name} has no statement")
        found[name] = statement
    return found


def load(package: str) -> dict[str, str]:
    """Every named statement of the ``.sql`` files of ``package`` (``functions.sql`` aside)."""
    queries: dict[str, str] = {}
    for entry in sorted(resources.files(package).iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql") or entry.name == FUNCTIONS:
            continue
        for name, statement in parse(entry.read_text(encoding="utf-8"), entry.name).items():
            if name in queries:
                raise ValueError(f"{entry.name}: the name {name} is also given in another file")
            queries[name] = statement
    return queries


QUERIES = load(__name__)


def raw(name: str) -> str:
    """The text of statement ``name``."""
    return QUERIES[name]


@functools.cache
def query(name: str) -> TextClause:
    """Statement ``name`` for ``session.execute``."""
    return text(QUERIES[name])


def jsonb(value: Any) -> str | None:
    """``value`` as the JSON text a ``CAST(:x AS jsonb)`` parameter takes (anything JSON
    cannot hold as its string); None stays SQL NULL."""
    return None if value is None else json.dumps(value, default=str)


def functions() -> str:
    """The current PL/pgSQL functions, as the migrations create them."""
    return resources.files(__name__).joinpath(FUNCTIONS).read_text(encoding="utf-8")
