"""Does nothing and succeeds: for tests, benchmarks and wiring checks."""

from __future__ import annotations

from typing import Any


def run(config: dict[str, Any], parameters: dict[str, Any]) -> Any:
    return {"ok": True}
