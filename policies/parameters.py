"""Request-time validation of an execution's parameters against the action's JSON Schema."""

from __future__ import annotations

from typing import Any

import jsonschema
from jsonschema import exceptions

from app.errors import InvalidParameters


def validate(schema: dict[str, Any], parameters: Any) -> dict[str, Any]:
    if not isinstance(parameters, dict):
        raise InvalidParameters("parameters must be a JSON object")
    if not schema:
        return parameters
    validator_cls = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft202012Validator
    )
    error = exceptions.best_match(validator_cls(schema).iter_errors(parameters))
    if error is not None:
        raise InvalidParameters(f"parameters{error.json_path.removeprefix('$')}: {error.message}")
    return parameters
