"""Request-time validation of an execution's parameters against the action's JSON Schema."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
import referencing.jsonschema
from jsonschema import exceptions

from app.errors import InvalidParameters
from policies import pack_schema, regex

# JSON nested deeper than this is refused wherever it comes in (API bodies, parameters,
# payloads, pack files): deep enough for any real document, far from Python's recursion limit.
MAX_DEPTH = 64


def depth(value: Any) -> int:
    """How deeply ``value`` nests dicts and lists (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest  # deep enough to refuse: no need to walk the rest
        stack.extend((child, level) for child in children)
    return deepest


def unicode_ok(value: str) -> bool:
    """False for a string Postgres cannot store: a lone surrogate (JSON allows ``\\ud800``)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _storable(value: Any, path: str) -> None:
    """Postgres jsonb holds neither NUL characters, lone surrogates nor NaN/Infinity: refuse
    them up front."""
    if isinstance(value, str) and "\x00" in value:
        raise InvalidParameters(f"{path}: NUL characters are not allowed")
    if isinstance(value, str) and not unicode_ok(value):
        raise InvalidParameters(f"{path}: lone surrogates are not valid Unicode")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidParameters(f"{path}: {value} is not a finite number")
    if isinstance(value, dict):
        for key, item in value.items():
            _storable(key, path)
            _storable(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _storable(item, f"{path}[{index}]")


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not regex.search(pattern, instance):
        yield exceptions.ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if regex.search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


@cache
def _on_re2(validator_cls: Any) -> Any:
    """``validator_cls`` with its pattern keywords on RE2: parameters come from requests and
    payloads, and Python's re backtracks (``pattern: "^(a+)+$"`` held a web thread 50 s)."""
    return jsonschema.validators.extend(
        validator_cls, {"pattern": _pattern, "patternProperties": _pattern_properties}
    )


def schema_problem(schema: Any) -> str | None:
    """Why an action's parameters ``schema`` cannot be used, or None: not a JSON Schema, a
    pattern RE2 cannot run, a ``$ref`` that resolves to nothing in the schema itself."""
    validator_cls = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft202012Validator
    )
    try:
        validator_cls.check_schema(schema)
    except jsonschema.SchemaError as error:
        return f"not a JSON Schema: {error.message}"
    resolver = (
        referencing.Registry()
        .with_resource(
            "",
            referencing.jsonschema.specification_with(
                validator_cls.META_SCHEMA.get("$schema", ""),
                default=referencing.jsonschema.DRAFT202012,
            ).create_resource(schema),
        )
        .resolver()
    )
    for key, value in _keyed(schema):
        if key in ("pattern", "patternProperties"):
            for pattern in value if key == "patternProperties" else [value]:
                found = regex.problem(pattern)
                if found is not None:
                    return found
        elif key == "$ref":
            try:
                resolver.lookup(str(value))
            except referencing.exceptions.Unresolvable:
                return f"$ref {value!r} points at nothing in this schema (no remote schemas)"
    return None


def _keyed(value: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) of every mapping inside ``value``, without recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                yield str(key), child
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)


def _schema_check(schema: dict[str, Any]) -> Callable[[Any], Any] | None:
    """The best error of ``schema`` for a value (None when it passes), or None: no schema."""
    if not schema:
        return None
    validator_cls = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft202012Validator
    )
    check = _on_re2(validator_cls)(schema)

    def best_error(value: Any) -> Any:
        try:
            return exceptions.best_match(check.iter_errors(value))
        except (referencing.exceptions.Unresolvable, exceptions.SchemaError) as error:
            # A schema stored before load checked it: the request is refused, not a 500.
            raise InvalidParameters(
                f"the action's parameters schema cannot be used: {error}"
            ) from None

    return best_error


def validator(
    schema: dict[str, Any], runner: str | None = None, max_bytes: int | None = None
) -> Callable[[Any], dict[str, Any]]:
    """``validate`` against the action's schema and then the parameters its ``runner`` reads
    itself, with the validators built once (bulk intake)."""
    checks = [
        check
        for check in (
            _schema_check(schema),
            _schema_check(pack_schema.RUNNER_PARAMETERS.get(runner or "", {})),
        )
        if check is not None
    ]

    def validate_one(parameters: Any) -> dict[str, Any]:
        if not isinstance(parameters, dict):
            raise InvalidParameters("parameters must be a JSON object")
        if depth(parameters) > MAX_DEPTH:
            raise InvalidParameters(f"parameters nest more than {MAX_DEPTH} levels deep")
        _storable(parameters, "parameters")
        if max_bytes is not None:
            size = len(json.dumps(parameters, ensure_ascii=False, separators=(",", ":")).encode())
            if size > max_bytes:
                raise InvalidParameters(
                    f"parameters are {size} bytes; at most {max_bytes} are allowed "
                    "(USHER_MAX_PARAMETERS_BYTES)"
                )
        for check in checks:
            error = check(parameters)
            if error is not None:
                raise InvalidParameters(
                    f"parameters{error.json_path.removeprefix('$')}: {error.message}"
                )
        return parameters

    return validate_one


def validate(
    schema: dict[str, Any],
    parameters: Any,
    runner: str | None = None,
    max_bytes: int | None = None,
) -> dict[str, Any]:
    return validator(schema, runner, max_bytes)(parameters)
