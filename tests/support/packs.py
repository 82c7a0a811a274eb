"""Write and load packs for tests, each under a unique name so broker queues never collide."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine

from app import db, packs


def load(
    engine: Engine,
    directory: Path,
    actions: list[dict[str, Any]],
    policy: dict[str, Any] | None = None,
    name: str | None = None,
) -> str:
    """Write pack.yaml and actions/*.yaml, load them, return the pack name."""
    name = name or f"t{uuid.uuid4().hex[:8]}"
    root = directory / name
    (root / "actions").mkdir(parents=True, exist_ok=True)
    (root / "pack.yaml").write_text(yaml.safe_dump({"name": name, "policy": policy or {}}))
    for action in actions:
        (root / "actions" / f"{action['name']}.yaml").write_text(yaml.safe_dump(action))
    with db.unit_of_work(engine) as session:
        packs.load(session, root)
    return name
