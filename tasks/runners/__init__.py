"""Runners: one module per runner type, each exposing ``run(ctx: RunContext) -> result``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from app.errors import InvalidParameters
from tasks.runners.base import RunContext, RunnerError, RunnerTimeout, render_config

__all__ = ["NAMES", "RunContext", "RunnerError", "RunnerTimeout", "run"]

# Imported on first use: a worker that never sends e-mail never imports smtplib.
NAMES = ("noop", "sleep", "python", "shell", "http", "slack", "email")


def _runner(name: str) -> Callable[[RunContext], Any]:
    if name not in NAMES:
        raise RunnerError(f"unknown runner {name!r}", permanent=True)
    module = importlib.import_module(f"tasks.runners.{name}")
    runner: Callable[[RunContext], Any] = module.run
    return runner


def run(
    name: str,
    config: dict[str, Any],
    parameters: dict[str, Any],
    timeout_s: float | None = None,
    execution_id: int = 0,
    attempt: int = 1,
) -> Any:
    try:
        rendered = render_config(config, parameters)
    except InvalidParameters as error:
        raise RunnerError(error.message, permanent=True) from None
    ctx = RunContext(rendered, parameters, timeout_s, execution_id, attempt)
    return _runner(name)(ctx)
