"""Regular expressions on hostile input: RE2 (google-re2), linear in the input whatever the
pattern, so a payload cannot make ``^(a+)+$`` backtrack for minutes and hold a worker or a
web thread. Used by rule criteria and by the ``pattern`` keywords of parameter schemas. The
price is RE2's syntax (no backreferences or lookaround), refused where a pattern is loaded.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import Any

import re2

SYNTAX = "RE2 syntax: no backreferences or lookaround"


@cache
def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a bad pattern is reported by problem(), not on stderr
    return options


@lru_cache(maxsize=1024)
def compiled(pattern: str) -> Any:
    return re2.compile(pattern, _options())


def problem(pattern: Any) -> str | None:
    """Why ``pattern`` cannot be used, or None."""
    if not isinstance(pattern, str):
        return "a pattern must be a string"
    try:
        compiled(pattern)
    except re2.error as error:
        reason = error.args[0] if error.args else error
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        return f"bad regex {pattern!r} ({SYNTAX}): {reason}"
    return None


def search(pattern: str, text: str) -> bool:
    """``pattern`` found in ``text``; False for a pattern RE2 cannot compile (one stored before
    patterns were checked at load)."""
    try:
        return compiled(pattern).search(text) is not None
    except re2.error:
        return False
