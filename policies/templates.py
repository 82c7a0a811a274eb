"""Parameter templates: Jinja2 in its sandbox, e.g. ``"{{ event.payload.host }}"``.

A string that is exactly one ``{{ expression }}`` keeps the expression's type (a number
stays a number, a list a list); any other string renders to a string. In a URL
(``render_url``) every value an expression yields is percent-encoded, so a value cannot
change the URL's host, path or query structure; a resolved secret is the operator's own
text and is kept as it is. An error names the config path, never the template's text (it
may hold a secret's name next to a token, or the value it failed on).
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from typing import Any
from urllib.parse import quote

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, Undefined, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app import secretstore
from app.errors import InvalidParameters

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*$", re.DOTALL)


_DOT_SEGMENT = re.compile(r"(^|[/\\])\.\.?([/\\]|$)")


def _url_part(value: Any) -> Any:
    if isinstance(value, secretstore.SecretValue):
        return value
    text = value if isinstance(value, str) else str(value)
    # Encoded, a dot segment still climbs the path on a server that decodes before it
    # normalises (many do): refused rather than sent.
    if _DOT_SEGMENT.search(text):
        raise ValueError("a value for the URL holds a '.' or '..' path segment")
    return quote(text, safe="")


@cache
def _environment(url: bool = False) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, finalize=_url_part if url else None
    )


# Compiling is most of a render's cost; a rule's templates are few and reused per event.
@lru_cache(maxsize=1024)
def _expression(source: str) -> Any:
    return _environment().compile_expression(source, undefined_to_none=False)


@lru_cache(maxsize=1024)
def _template(source: str, url: bool = False) -> Any:
    return _environment(url).from_string(source)


def problem(source: str, names: frozenset[str]) -> str | None:
    """What keeps template ``source`` from rendering, known before any value is there: its
    syntax, or a name it reads that its context (``names``) will not hold. None when fine."""
    if not has_template(source):
        return None
    environment = _environment()
    try:
        tree = environment.parse(source)
    except TemplateSyntaxError as error:
        return f"not a valid template: {error.message} (line {error.lineno} of the template)"
    unknown = sorted(meta.find_undeclared_variables(tree) - names - set(environment.globals))
    if unknown:
        known = ", ".join(sorted(names))
        return (
            f"the template reads {', '.join(unknown)}, which is not defined here (known: {known})"
        )
    return None


def has_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


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
        raise InvalidParameters(f"{path}: the template failed: {_problem(error)}") from None


def render_url(value: Any, context: dict[str, Any], path: str) -> Any:
    """Render a URL template: each expression's value goes in percent-encoded."""
    if not has_template(value):
        return value
    try:
        return _template(value, url=True).render(**context)
    except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as error:
        raise InvalidParameters(f"{path}: the template failed: {_problem(error)}") from None


def _problem(error: Exception) -> str:
    # The error's own text, cut short: a conversion error quotes the value it failed on.
    return secretstore.redact_text(f"{type(error).__name__}: {error}")[:200]
