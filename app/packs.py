"""Load packs (pack.yaml, actions/*.yaml) into Postgres, idempotently and all-or-nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.errors import InvalidPack
from app.models import Action, Pack

RUNNERS = ("noop", "sleep", "python", "shell", "http", "slack", "email")
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$"
POLICY_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "concurrency": {"type": "integer", "minimum": 1, "maximum": 10_000},
        "partition_by": {"type": "array", "items": {"type": "string"}},
        "max_queue_length": {"type": "integer", "minimum": 1, "maximum": 10_000_000},
        "queue_timeout_s": {"type": "integer", "minimum": 1, "maximum": 604_800},
        "rate_limit": {"type": "object"},
        "retry": {"type": "object"},
    },
}
PACK_SCHEMA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": NAME_PATTERN},
        "description": {"type": "string"},
        "policy": POLICY_SCHEMA,
    },
}
ACTION_SCHEMA = {
    "type": "object",
    "required": ["name", "runner"],
    "properties": {
        "name": {"type": "string", "pattern": NAME_PATTERN},
        "description": {"type": "string"},
        "runner": {"enum": list(RUNNERS)},
        "runner_config": {"type": "object"},
        "parameters": {"type": "object"},
        "timeout_s": {"type": "integer", "minimum": 1, "maximum": 604_800},
        "policy": POLICY_SCHEMA,
    },
}


@dataclass
class PackSpec:
    name: str
    description: str
    policy: dict[str, Any]
    actions: list[dict[str, Any]] = field(default_factory=list)


def _read(path: Path, schema: dict[str, Any]) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise InvalidPack(f"{where}: not valid YAML: {getattr(error, 'problem', error)}") from None
    problem = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(document)
    )
    if problem is not None:
        location = problem.json_path.removeprefix("$").lstrip(".") or "document"
        raise InvalidPack(f"{path}: {location}: {problem.message}")
    return dict(document)


def read_pack(directory: Path) -> PackSpec:
    meta = _read(directory / "pack.yaml", PACK_SCHEMA)
    spec = PackSpec(meta["name"], meta.get("description", ""), meta.get("policy") or {})
    for path in sorted((directory / "actions").glob("*.y*ml")):
        action = _read(path, ACTION_SCHEMA)
        schema = action.get("parameters") or {}
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as error:
            raise InvalidPack(f"{path}: parameters is not a JSON Schema: {error.message}") from None
        spec.actions.append(action)
    return spec


def discover(path: Path) -> list[Path]:
    """A pack directory, or a directory of pack directories."""
    if (path / "pack.yaml").is_file():
        return [path]
    found = sorted(p.parent for p in path.glob("*/pack.yaml"))
    if not found:
        raise InvalidPack(f"{path}: no pack.yaml here or in its subdirectories")
    return found


def load(session: Session, path: Path) -> list[PackSpec]:
    """Validate every pack under ``path`` first, then upsert them; the caller commits."""
    specs = [read_pack(directory) for directory in discover(path)]
    for spec in specs:
        _upsert(session, spec)
    return specs


def _upsert(session: Session, spec: PackSpec) -> None:
    pack_id = session.execute(
        insert(Pack)
        .values(name=spec.name, description=spec.description, policy=spec.policy)
        .on_conflict_do_update(
            index_elements=[Pack.name],
            set_={"description": spec.description, "policy": spec.policy, "updated_at": func.now()},
        )
        .returning(Pack.id)
    ).scalar_one()
    for action in spec.actions:
        values = {
            "pack_id": pack_id,
            "ref": f"{spec.name}.{action['name']}",
            "name": action["name"],
            "description": action.get("description", ""),
            "runner": action["runner"],
            "runner_config": action.get("runner_config") or {},
            "parameters_schema": action.get("parameters") or {},
            "timeout_s": action.get("timeout_s"),
            "policy": action.get("policy") or {},
        }
        update = {k: v for k, v in values.items() if k != "ref"} | {"updated_at": func.now()}
        session.execute(
            insert(Action)
            .values(**values)
            .on_conflict_do_update(index_elements=[Action.ref], set_=update)
        )


def action_refs(session: Session) -> list[str]:
    return list(session.execute(select(Action.ref).order_by(Action.ref)).scalars())
