"""The executions list's search: ``param.<name>=<value>`` filters of a query string, checked
and turned into one jsonpath that the GIN index on ``executions.parameters`` answers.

A value from a query string is text: it matches a parameter equal to that string, or to the
number or boolean it spells (``n=5`` matches ``5``, ``5.0`` and ``"5"``; ``on=true``
matches ``true`` and ``"true"``). The name is the top-level parameter's, dots and all
(``param.a.b`` is the parameter ``"a.b"``). Every filter must match (AND).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime

from app.errors import InvalidRequest

PREFIX = "param."
MAX_FILTERS = 5
MAX_NAME = 100  # characters
MAX_VALUE = 200
NUMBER = re.compile(r"-?(0|[1-9][0-9]{0,15})(\.[0-9]{1,15})?([eE][-+]?[0-9]{1,3})?")


def filters(args: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The ``param.`` filters of a query string's (key, value) pairs by parameter name, or
    InvalidRequest naming the first one that is wrong (too many, a name or value too long,
    an empty name, one name given twice)."""
    found: dict[str, str] = {}
    for key, value in args:
        if not key.startswith(PREFIX):
            continue
        name = key.removeprefix(PREFIX)
        if not name:
            raise InvalidRequest(f"{key}: a parameter name after {PREFIX!r}")
        if len(name) > MAX_NAME:
            raise InvalidRequest(f"{key[:40]}...: a name of at most {MAX_NAME} characters")
        if len(value) > MAX_VALUE:
            raise InvalidRequest(f"{key}: a value of at most {MAX_VALUE} characters")
        if "\x00" in key or "\x00" in value:
            raise InvalidRequest(f"{key!r}: no NUL characters")
        if name in found:
            raise InvalidRequest(f"{key}: given twice")
        found[name] = value
        if len(found) > MAX_FILTERS:
            raise InvalidRequest(f"{key}: at most {MAX_FILTERS} param. filters")
    return found


def _literals(value: str) -> list[str]:
    """The jsonpath literals ``value`` matches: the string, and the number or boolean."""
    found = [json.dumps(value)]
    if value in ("true", "false"):
        found.append(value)
    elif NUMBER.fullmatch(value):
        found.append(value)
    return found


def match(params: dict[str, str]) -> str | None:
    """One strict-mode jsonpath predicate for ``parameters @@``, or None (no filter). Names
    and strings are JSON-quoted, which jsonpath reads as its own string literals."""
    if not params:
        return None
    terms = []
    for name, value in sorted(params.items()):
        path = f"$.{json.dumps(name)}"
        terms.append("(" + " || ".join(f"{path} == {v}" for v in _literals(value)) + ")")
    return "strict " + " && ".join(terms)


def utc(moment: datetime | None) -> datetime | None:
    """A time without an offset is UTC's (``since``, ``until``)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
