"""Runners: one module per runner type, each exposing ``run(ctx: RunContext) -> result``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app import secretstore
from app.errors import InvalidParameters
from policies import commands, pack_schema, templates
from policies.pack_schema import NAMES
from tasks.runners import base
from tasks.runners.base import RunContext, RunnerError, RunnerTimeout, render_config

__all__ = ["NAMES", "RunContext", "RunnerError", "RunnerTimeout", "declared", "run"]


# Imported on first use: a worker that never sends e-mail never imports smtplib.
def _runner(name: str) -> Callable[[RunContext], Any]:
    if name not in NAMES:
        raise RunnerError(f"unknown runner {name!r}", permanent=True)
    module = importlib.import_module(f"tasks.runners.{name}")
    runner: Callable[[RunContext], Any] = module.run
    return runner


def _named(schema: Any) -> set[str]:
    properties = schema.get("properties") if isinstance(schema, dict) else None
    required = schema.get("required") if isinstance(schema, dict) else None
    names = set(properties) if isinstance(properties, dict) else set()
    names.update(r for r in required or () if isinstance(r, str))
    return names


def declared(name: str, schema: dict[str, Any]) -> frozenset[str]:
    """The parameter names an action's schema declares (``properties`` and ``required``)
    and those its runner reads itself: the only ones a runner is given."""
    return frozenset(_named(schema) | _named(pack_schema.RUNNER_PARAMETERS.get(name)))


def run(
    name: str,
    config: dict[str, Any],
    parameters: dict[str, Any],
    *,
    schema: dict[str, Any],
    timeout_s: float | None = None,
    execution_id: int = 0,
    attempt: int = 1,
    secrets_dir: Path | None = None,
    output: base.Output | None = None,
) -> Any:
    # A schema without additionalProperties: false lets extra keys through validation; they
    # never reach a runner (as options of a command, keyword arguments of a function).
    allowed = declared(name, schema)
    given = {key: value for key, value in parameters.items() if key in allowed}
    # Refused at pack load; an action stored before that check must not run either.
    unsafe = commands.problem(name, config)
    if unsafe is not None:
        where = ".".join(str(part) for part in ["runner_config", *unsafe[0]])
        raise RunnerError(f"{where}: {unsafe[1]}", permanent=True)
    try:
        rendered = render_config(name, config, given, secretstore.Secrets(secrets_dir))
    except (InvalidParameters, secretstore.MissingSecret) as error:
        raise RunnerError(error.message, permanent=True) from None
    templated = frozenset(key for key, value in config.items() if _holds_template(value))
    ctx = RunContext(
        rendered,
        given,
        timeout_s,
        execution_id,
        attempt,
        templated=templated,
        source=config,
        output=output,
    )
    return _runner(name)(ctx)


def _holds_template(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_holds_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_template(v) for v in value)
    return templates.has_template(value)
