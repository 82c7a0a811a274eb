"""Request-time validation of an execution's parameters against the action's JSON Schema."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jsonschema
from jsonschema import exceptions

from app.errors import InvalidParameters


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


def validator(schema: dict[str, Any]) -> Callable[[Any], dict[str, Any]]:
    """``validate`` against one schema, with the schema's validator built once (bulk intake)."""
    check = None
    if schema:
        validator_cls = jsonschema.validators.validator_for(
            schema, default=jsonschema.Draft202012Validator
        )
        check = validator_cls(schema)

    def validate_one(parameters: Any) -> dict[str, Any]:
        if not isinstance(parameters, dict):
            raise InvalidParameters("parameters must be a JSON object")
        _storable(parameters, "parameters")
        if check is None:
            return parameters
        error = exceptions.best_match(check.iter_errors(parameters))
        if error is not None:
            raise InvalidParameters(
                f"parameters{error.json_path.removeprefix('$')}: {error.message}"
            )
        return parameters

    return validate_one


def validate(schema: dict[str, Any], parameters: Any) -> dict[str, Any]:
    return validator(schema)(parameters)
