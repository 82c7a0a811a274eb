"""Rule criteria: a mapping from a dotted path to a test, all of which must hold.

``{"payload.severity": {"in": ["high", "critical"]}, "payload.host": {"regex": "^db"}}``
Paths start at the event: ``trigger``, ``payload.<...>``; list items by index
(``payload.hosts.0``). A bare value is shorthand for ``{"eq": value}``.

Regexes run on RE2 (google-re2), which matches in time linear in the input whatever the
pattern: a payload cannot make a rule like ``^(a+)+$`` backtrack for minutes and hold a
worker. The price is RE2's syntax (no backreferences or lookaround), refused at pack load.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from policies import regex

MISSING = object()


def lookup(document: Any, path: str) -> Any:
    current = document
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif (
            isinstance(current, list)
            and part.lstrip("-").isdigit()
            and -len(current) <= int(part) < len(current)
        ):
            current = current[int(part)]
        else:
            return MISSING
    return current


def _compare(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def test(value: Any, expected: Any) -> bool:
        if value is MISSING or value is None:
            return False
        try:
            return op(value, expected)
        except TypeError:  # "3" > 2: not comparable is not a match
            return False

    return test


def _search(value: Any, pattern: Any) -> bool:
    return isinstance(value, str) and regex.search(str(pattern), value)


def _contains(value: Any, expected: Any) -> bool:
    if isinstance(value, str):
        return isinstance(expected, str) and expected in value
    if isinstance(value, list | dict):
        return expected in value
    return False


OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda v, e: v is not MISSING and v == e,
    "ne": lambda v, e: v is MISSING or v != e,
    "in": lambda v, e: v is not MISSING and isinstance(e, list) and v in e,
    "nin": lambda v, e: v is MISSING or (isinstance(e, list) and v not in e),
    "gt": _compare(lambda v, e: v > e),
    "gte": _compare(lambda v, e: v >= e),
    "lt": _compare(lambda v, e: v < e),
    "lte": _compare(lambda v, e: v <= e),
    "contains": lambda v, e: v is not MISSING and _contains(v, e),
    "regex": _search,
    "exists": lambda v, e: (v is not MISSING) == bool(e),
}


def check(criteria: dict[str, Any]) -> list[tuple[str, str]]:
    """(path, problem) for each problem of a criteria block; empty when it is valid."""
    problems: list[tuple[str, str]] = []
    for path, test in criteria.items():
        tests = test if isinstance(test, dict) and test and set(test) <= set(OPERATORS) else None
        if tests is None and isinstance(test, dict):
            unknown = sorted(set(test) - set(OPERATORS))
            problems.append((path, f"unknown operator(s) {unknown}; use {sorted(OPERATORS)}"))
            continue
        for op, expected in (tests or {}).items():
            if op in ("in", "nin") and not isinstance(expected, list):
                problems.append((path, f"'{op}' needs a list"))
            if op == "regex":
                found = regex.problem(str(expected))
                if found is not None:
                    problems.append((path, found))
    return problems


def matches(criteria: dict[str, Any], event: dict[str, Any]) -> bool:
    for path, test in criteria.items():
        value = lookup(event, path)
        tests = test if isinstance(test, dict) and set(test) <= set(OPERATORS) and test else None
        if tests is None:
            tests = {"eq": test}
        if not all(OPERATORS[op](value, expected) for op, expected in tests.items()):
            return False
    return True
