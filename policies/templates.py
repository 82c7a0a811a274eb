"""Parameter templates: Jinja2 in its sandbox, e.g. ``"{{ event.payload.host }}"``.

A string that is exactly one ``{{ expression }}`` keeps the expression's type (a number
stays a number, a list a list); any other string renders to a string.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app.errors import InvalidParameters

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*$", re.DOTALL)


@cache
def _environment() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


# Compiling is most of a render's cost; a rule's templates are few and reused per event.
@lru_cache(maxsize=1024)
def _expression(source: str) -> Any:
    return _environment().compile_expression(source, undefined_to_none=False)


@lru_cache(maxsize=1024)
def _template(source: str) -> Any:
    return _environment().from_string(source)


def render(value: Any, context: dict[str, Any], path: str = "parameters") -> Any:
    """Render every string inside ``value`` (dicts and lists recursively) against ``context``."""
    if isinstance(value, dict):
        return {k: render(v, context, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "{" not in value:
        return value
    try:
        single = _SINGLE_EXPRESSION.match(value)
        if single:
            result = _expression(single.group("expr").strip())(**context)
            if isinstance(result, Undefined):
                result._fail_with_undefined_error()
            return result
        return _template(value).render(**context)
    except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as error:
        # e.g. {{ 1 // event.payload.n }} with n = 0: the template's failure, not the caller's
        raise InvalidParameters(f"{path}: template {value!r} failed: {error}") from None
