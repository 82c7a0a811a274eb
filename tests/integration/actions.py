"""Python entry points that test actions call through the ``python`` runner."""

from __future__ import annotations

import time
from pathlib import Path


def sleep_then_mark(seconds: float, marker: str) -> dict[str, str]:
    time.sleep(seconds)
    Path(marker).write_text("finished")
    return {"marker": marker}
