"""Calls ``runner_config.entry_point`` (``module:function``) with the parameters as keywords.

An exception from the function is transient (retried) unless it is a permanent RunnerError.
"""

from __future__ import annotations

import importlib
from typing import Any

from tasks.runners.base import RunContext, RunnerError


def run(ctx: RunContext) -> Any:
    entry_point = ctx.require("entry_point")
    module_name, _, function_name = entry_point.partition(":")
    if not function_name:
        raise RunnerError("runner_config.entry_point must be 'module:function'", permanent=True)
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise RunnerError(f"cannot load {entry_point}: {error}", permanent=True) from None
    return function(**ctx.parameters)
