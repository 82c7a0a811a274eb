"""Calls a Python callable named by ``config.entry_point`` (``module:function``)."""

from __future__ import annotations

import importlib
from typing import Any

from tasks.runners.base import RunnerError


def run(config: dict[str, Any], parameters: dict[str, Any]) -> Any:
    entry_point = config.get("entry_point")
    if not isinstance(entry_point, str) or ":" not in entry_point:
        raise RunnerError("python runner needs entry_point: 'module:function'", permanent=True)
    module_name, _, function_name = entry_point.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise RunnerError(f"cannot load {entry_point}: {error}", permanent=True) from None
    return function(**parameters)
