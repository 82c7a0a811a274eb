"""Sleeps for ``parameters.seconds`` (or ``runner_config.seconds``)."""

from __future__ import annotations

import time
from typing import Any

from tasks.runners.base import RunContext


def run(ctx: RunContext) -> Any:
    seconds = float(ctx.parameters.get("seconds", ctx.config.get("seconds", 1)))
    time.sleep(max(seconds, 0))
    return {"slept": seconds}
