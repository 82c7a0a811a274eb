"""Write and load packs for tests, each under a unique name so broker queues never collide."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine

from app import db
from policies import packs


class _Dumper(yaml.SafeDumper):
    """Writes an object met twice in full: pack files refuse YAML aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _yaml(document: dict[str, Any]) -> str:
    return yaml.dump(document, Dumper=_Dumper)


def load(
    engine: Engine,
    directory: Path,
    actions: list[dict[str, Any]],
    policy: dict[str, Any] | None = None,
    name: str | None = None,
    pools: dict[str, int] | None = None,
) -> str:
    """Write pack.yaml (with ``pools``, if any) and actions/*.yaml, load them, return the
    pack name."""
    name = name or f"t{uuid.uuid4().hex[:8]}"
    root = directory / name
    (root / "actions").mkdir(parents=True, exist_ok=True)
    pack: dict[str, Any] = {"name": name, "policy": policy or {}}
    if pools:
        pack["pools"] = pools
    (root / "pack.yaml").write_text(_yaml(pack))
    for action in actions:
        (root / "actions" / f"{action['name']}.yaml").write_text(_yaml(action))
    with db.unit_of_work(engine) as session:
        packs.load(session, root)
    return name
