"""Parameter schemas for tests: runners are given only the parameters a schema declares."""

from __future__ import annotations

from typing import Any


def declaring(*names: str) -> dict[str, Any]:
    """A schema that declares ``names`` (any type)."""
    return {"type": "object", "properties": {name: {} for name in names}}
