"""Python entry points that test actions call through the ``python`` runner."""

from __future__ import annotations

import time
from pathlib import Path


def sleep_then_mark(seconds: float, marker: str) -> dict[str, str]:
    time.sleep(seconds)
    Path(marker).write_text("finished")
    return {"marker": marker}


def flaky(key: str, directory: str, fail_times: int, permanent: bool = False) -> dict[str, int]:
    """Fail the first ``fail_times`` calls for ``key`` (counted in a file), then succeed."""
    from tasks.runners.base import RunnerError

    counter = Path(directory) / f"{key}.count"
    calls = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(calls))
    if calls <= fail_times:
        if permanent:
            raise RunnerError(f"{key}: permanent failure on call {calls}", permanent=True)
        raise RuntimeError(f"{key}: transient failure on call {calls}")
    return {"calls": calls}
