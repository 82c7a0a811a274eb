"""The benchmark's SQL by name: the blocks of ``bench.sql`` beside this module, read with the
product's loader (``app.sql.load``) but kept apart from the product's statements."""

from __future__ import annotations

import functools

from sqlalchemy import TextClause, text

from app import sql

assert __package__
QUERIES = sql.load(__package__)


@functools.cache
def query(name: str) -> TextClause:
    """Statement ``name`` of ``bench.sql`` for ``execute``."""
    return text(QUERIES[name])
