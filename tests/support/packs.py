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


def action(
    name: str, runner: str, policy: dict[str, Any], parameters: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An action's file: ``runner`` under ``policy``, with a ``host`` parameter unless told."""
    if parameters is None:
        parameters = {"type": "object", "properties": {"host": {"type": "string"}}}
    return {"name": name, "runner": runner, "parameters": parameters, "policy": policy}


def write_folder(root: Path, pack: dict[str, Any], actions: list[dict[str, Any]]) -> Path:
    """Write ``pack`` as root/pack.yaml and each action as root/actions/<name>.yaml (not
    loaded); return ``root``."""
    (root / "actions").mkdir(parents=True, exist_ok=True)
    (root / "pack.yaml").write_text(_yaml(pack))
    for document in actions:
        (root / "actions" / f"{document['name']}.yaml").write_text(_yaml(document))
    return root


def load_folder(engine: Engine, root: Path) -> None:
    """Load every pack under ``root`` in one transaction."""
    with db.unit_of_work(engine) as session:
        packs.load(session, root)


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
    pack: dict[str, Any] = {"name": name, "policy": policy or {}}
    if pools:
        pack["pools"] = pools
    load_folder(engine, write_folder(directory / name, pack, actions))
    return name
