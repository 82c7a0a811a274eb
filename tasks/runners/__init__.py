"""Runners: one module per runner type, each exposing ``run(config, parameters)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tasks.runners import noop, python, sleep
from tasks.runners.base import RunnerError

__all__ = ["RUNNERS", "RunnerError", "run"]


Runner = Callable[[dict[str, Any], dict[str, Any]], Any]

RUNNERS: dict[str, Runner] = {
    "noop": noop.run,
    "sleep": sleep.run,
    "python": python.run,
}


def run(runner: str, config: dict[str, Any], parameters: dict[str, Any]) -> Any:
    try:
        fn = RUNNERS[runner]
    except KeyError:
        raise RunnerError(f"unknown runner {runner!r}", permanent=True) from None
    return fn(config, parameters)
