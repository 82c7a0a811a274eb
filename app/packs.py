"""Load packs (pack.yaml, actions/*.yaml) into Postgres, idempotently and all-or-nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.errors import InvalidPack
from app.models import Action, Pack, Rule
from policies import criteria

RUNNERS = ("noop", "sleep", "python", "shell", "http", "slack", "email")
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$"
WINDOW_SCHEMA = {
    "type": "object",
    "required": ["count", "per_s"],
    "additionalProperties": False,
    "properties": {
        "count": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
        "per_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 86_400},
    },
}
POLICY_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "concurrency": {"type": "integer", "minimum": 1, "maximum": 10_000},
        "partition_by": {"type": "array", "items": {"type": "string"}},
        "max_queue_length": {"type": "integer", "minimum": 1, "maximum": 10_000_000},
        "queue_timeout_s": {"type": "integer", "minimum": 1, "maximum": 604_800},
        "rate_limit": {
            "oneOf": [
                WINDOW_SCHEMA,
                {"type": "array", "minItems": 1, "maxItems": 5, "items": WINDOW_SCHEMA},
            ]
        },
        "retry": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "max_retries": {"type": "integer", "minimum": 0, "maximum": 100},
                "strategy": {"enum": ["fixed", "linear", "exponential"]},
                "initial_delay_ms": {"type": "integer", "minimum": 10, "maximum": 10_000},
                "max_delay_ms": {"type": "integer", "minimum": 100, "maximum": 300_000},
                "jitter": {"type": "boolean"},
                "hold_slot": {"type": "boolean"},
            },
        },
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


RULE_SCHEMA = {
    "type": "object",
    "required": ["name", "trigger", "action"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": NAME_PATTERN},
        "description": {"type": "string"},
        "trigger": {"type": "string", "minLength": 1, "maxLength": 200},
        "criteria": {"type": "object"},
        "action": {"type": "string", "minLength": 3},
        "parameters": {"type": "object"},
        "priority": {"type": "integer", "minimum": -1000, "maximum": 1000},
        "enabled": {"type": "boolean"},
    },
}


@dataclass
class PackSpec:
    name: str
    description: str
    policy: dict[str, Any]
    actions: list[dict[str, Any]] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)


def _line_of(node: yaml.Node | None, path: list[Any]) -> int | None:
    """The 1-based line of the YAML node at ``path`` (or of its nearest ancestor)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            match = node.value[part]
        else:
            match = None
        if match is None:
            break
        node, line = match, match.start_mark.line + 1
    return line


def _read(path: Path, schema: dict[str, Any]) -> tuple[dict[str, Any], yaml.Node | None]:
    """The document and its YAML node tree (to name lines in later errors)."""
    source = path.read_text()
    try:
        document = yaml.safe_load(source)
        root = yaml.compose(source)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise InvalidPack(f"{where}: not valid YAML: {getattr(error, 'problem', error)}") from None
    problem = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(document)
    )
    if problem is not None:
        location = problem.json_path.removeprefix("$").lstrip(".") or "document"
        line = _line_of(root, list(problem.absolute_path))
        where = f"{path}:{line}" if line else str(path)
        raise InvalidPack(f"{where}: {location}: {problem.message}")
    return dict(document), root


def read_pack(directory: Path) -> PackSpec:
    meta, _ = _read(directory / "pack.yaml", PACK_SCHEMA)
    spec = PackSpec(meta["name"], meta.get("description", ""), meta.get("policy") or {})
    for path in sorted((directory / "actions").glob("*.y*ml")):
        action, _ = _read(path, ACTION_SCHEMA)
        schema = action.get("parameters") or {}
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as error:
            raise InvalidPack(f"{path}: parameters is not a JSON Schema: {error.message}") from None
        spec.actions.append(action)
    for path in sorted((directory / "rules").glob("*.y*ml")):
        rule, root = _read(path, RULE_SCHEMA)
        for key, problem in criteria.check(rule.get("criteria") or {}):
            line = _line_of(root, ["criteria", key])
            raise InvalidPack(f"{path}:{line}: criteria.{key}: {problem}")
        if "." not in rule["action"]:
            raise InvalidPack(f"{path}: action must be a reference 'pack.action'")
        spec.rules.append(rule)
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
    refs = []
    for rule in spec.rules:
        values = {
            "pack_id": pack_id,
            "ref": f"{spec.name}.{rule['name']}",
            "name": rule["name"],
            "description": rule.get("description", ""),
            "trigger": rule["trigger"],
            "criteria": rule.get("criteria") or {},
            "action_ref": rule["action"],
            "parameters": rule.get("parameters") or {},
            "priority": rule.get("priority", 0),
            "enabled": rule.get("enabled", True),
        }
        refs.append(values["ref"])
        update = {k: v for k, v in values.items() if k != "ref"} | {"updated_at": func.now()}
        session.execute(
            insert(Rule)
            .values(**values)
            .on_conflict_do_update(index_elements=[Rule.ref], set_=update)
        )
    # A rule whose file is gone stops firing; its past enforcements keep its ref. Locked in
    # ref order first, the order event processing locks rules in.
    gone = (
        select(Rule.id)
        .where(Rule.pack_id == pack_id, Rule.ref.not_in(refs))
        .order_by(Rule.ref)
        .with_for_update()
    )
    session.execute(delete(Rule).where(Rule.id.in_(list(session.execute(gone).scalars()))))


def action_refs(session: Session) -> list[str]:
    return list(session.execute(select(Action.ref).order_by(Action.ref)).scalars())
