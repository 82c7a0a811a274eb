"""The named statements of ``app/sql``: well formed, each one used, none missing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app import sql

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("app", "policies", "tasks", "web")
USED = re.compile(r"""sql\.(?:query|raw)\(\s*["']([a-z0-9_]+)["']""")


def product_sources() -> list[Path]:
    return [p for top in PRODUCT for p in (ROOT / top).rglob("*.py") if "bench" not in p.parts]


def test_blocks_are_parsed_by_name() -> None:
    text = "-- the file's own comment\n-- name: one\n-- why\nSELECT 1;\n\n-- name: two\nSELECT 2\n"
    assert sql.parse(text, "x.sql") == {"one": "-- why\nSELECT 1;", "two": "SELECT 2"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("SELECT 1\n-- name: one\nSELECT 1", "before the first"),
        ("-- name: one\nSELECT 1\n-- name: one\nSELECT 2", "given twice"),
        ("-- name: one\n\n-- name: two\nSELECT 2", "has no statement"),
    ],
)
def test_a_malformed_file_is_refused_naming_it(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=f"x.sql: .*{problem}"):
        sql.parse(text, "x.sql")


def test_every_statement_the_product_names_exists_and_every_one_is_used() -> None:
    used = {name for path in product_sources() for name in USED.findall(path.read_text())}
    assert used - set(sql.QUERIES) == set(), "named in code but in no .sql file"
    assert set(sql.QUERIES) - used == set(), "in a .sql file but used nowhere"


# A statement in a Python string: its verb and what must follow it (keywords upper case, as
# every statement of ours is written).
STATEMENT = re.compile(
    r"""["'](?:\s|\\n)*(SELECT\s[^"']*\bFROM\b|UPDATE\s+\w+\s+SET\b|INSERT\s+INTO\b"""
    r"""|DELETE\s+FROM\b|WITH\s+\w+\s+AS\b|SET\s+LOCAL\s+\w+\s*=|(?:CREATE|DROP)\s+"""
    r"""(?:TABLE|DATABASE|INDEX|FUNCTION|TRIGGER)\b|VACUUM\s+ANALYZE\b)"""
)
# Identifiers cannot be bind parameters: the benchmark's scratch database is named with
# psycopg.sql.Identifier, and its EXPLAIN prefixes statements the product recorded.
COMPOSED = {"app/cli/bench/scratch.py": 2}


def test_no_statement_is_written_in_python() -> None:
    found = {}
    for top in PRODUCT:
        for path in (ROOT / top).rglob("*.py"):
            hits = STATEMENT.findall(path.read_text())
            if hits:
                found[str(path.relative_to(ROOT))] = len(hits)
    assert found == COMPOSED
