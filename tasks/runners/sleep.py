"""Sleeps for ``parameters.seconds`` (or ``config.seconds``)."""

from __future__ import annotations

import time
from typing import Any


def run(config: dict[str, Any], parameters: dict[str, Any]) -> Any:
    seconds = float(parameters.get("seconds", config.get("seconds", 1)))
    time.sleep(max(seconds, 0))
    return {"slept": seconds}
