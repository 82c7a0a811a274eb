"""Does nothing and succeeds: for tests, benchmarks and wiring checks."""

from __future__ import annotations

from typing import Any

from tasks.runners.base import RunContext


def run(ctx: RunContext) -> Any:
    return {"ok": True}
