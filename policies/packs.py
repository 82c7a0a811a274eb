"""Load packs (pack.yaml, actions/*.yaml, rules/*.yaml, schedules/*.yaml, webhooks/*.yaml)
into Postgres, idempotently and all-or-nothing, after checking every file strictly against
``policies.pack_schema``.

Each file is read by ``policies.pack_files`` (plain files, plain YAML); this module checks
what it holds (shapes, schemas, commands, templates, timings, the actions rules and
schedules name) and upserts.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema import exceptions
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app import sql
from app.errors import InvalidPack
from app.models import Action, Pack, Rule
from policies import (
    commands,
    criteria,
    levels,
    limits,
    pack_files,
    pack_schema,
    parameters,
    schedules,
    templates,
    webhooks,
)

# The trigger of the events a final status emits (app/sql/functions.sql).
EXECUTION_TRIGGER = "usher.execution"
_TEMPLATE_PART = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_SECRETS = re.compile(r"(?<![\w.'\"])secrets\b")
_VALIDATORS = {
    kind: jsonschema.Draft202012Validator(schema) for kind, schema in pack_schema.SCHEMAS.items()
}
_RULE_SECRETS = (
    "rule parameters cannot use secrets: they are stored in Postgres with the execution; "
    "secrets belong in the action's runner_config ({{ secrets.NAME }})"
)

Problem = pack_files.Problem
# What a template may read: a rule's parameters render against the event, an action's
# runner_config against the execution's parameters and the worker's secrets.
_RULE_NAMES = frozenset({"event"})
_CONFIG_NAMES = frozenset({"parameters", "secrets"})


@dataclass
class PackSpec:
    name: str
    description: str
    policy: dict[str, Any]
    pools: dict[str, int] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)
    schedules: list[dict[str, Any]] = field(default_factory=list)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    # Where each rule and schedule came from, to name the file and line of a
    # cross-reference it breaks.
    rule_files: list[tuple[Path, yaml.Node | None]] = field(default_factory=list)
    schedule_files: list[tuple[Path, yaml.Node | None]] = field(default_factory=list)


def _shape_problem(document: Any) -> Problem | None:
    """Refuse what JSON (and Postgres jsonb) cannot hold, before any schema looks at it."""
    if not isinstance(document, dict):
        kind = type(document).__name__
        kind = {"NoneType": "empty", "list": "a list", "str": "a string"}.get(kind, f"a {kind}")
        return [], f"must be a mapping of keys to values, not {kind}"
    if parameters.depth(document) > parameters.MAX_DEPTH:
        return [], f"nested deeper than {parameters.MAX_DEPTH} levels"
    stack: list[tuple[Any, list[Any]]] = [(document, [])]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    return [*path, str(key)], "a key must be a string; quote it"
                stack.append((item, [*path, key]))
        elif isinstance(value, list):
            stack.extend((item, [*path, index]) for index, item in enumerate(value))
        elif isinstance(value, str) and ("\x00" in value or not parameters.unicode_ok(value)):
            return path, "holds a NUL character or a lone surrogate"
        elif isinstance(value, float) and not math.isfinite(value):
            return path, f"{value} is not a finite number"
    return None


def _schema_problem(kind: str, document: dict[str, Any]) -> Problem | None:
    errors = list(_VALIDATORS[kind].iter_errors(document))
    # An unknown key first: a misplaced key also makes a required one look missing.
    unknown = [e for e in errors if e.validator == "additionalProperties"]
    error = exceptions.best_match(unknown or errors)
    if error is None:
        return None
    if error.validator == "additionalProperties":
        return _unknown_key(error, document if kind == "action" else None)
    node: Any = error  # and its parents, up to the anyOf of a templated value
    while node is not None:
        # "'x' is not of type 'integer'" rather than "'x' does not match '\{\{'"
        if node.validator == "anyOf" and pack_schema.is_templated(node.schema):
            inner = exceptions.best_match(e for e in node.context if e.relative_schema_path[0] == 0)
            if inner is not None:
                return list(inner.absolute_path), f"{inner.message} (or a {{{{ template }}}})"
        node = node.parent
    return list(error.absolute_path), error.message


def _unknown_key(error: exceptions.ValidationError, action: dict[str, Any] | None) -> Problem:
    schema = error.schema if isinstance(error.schema, dict) else {}
    allowed = list(schema.get("properties", {}))
    instance = error.instance if isinstance(error.instance, dict) else {}
    key = next(str(k) for k in instance if k not in allowed)
    path = [*error.absolute_path, key]
    close = difflib.get_close_matches(key, allowed, n=1)
    if action is not None and not error.absolute_path:
        runner = pack_schema.RUNNER_CONFIG.get(str(action.get("runner")), {})
        config_keys = list(runner.get("properties", {}))
        if key in config_keys:
            return path, "unknown key here; it belongs under runner_config"
        near = difflib.get_close_matches(key, config_keys, n=1)
        if near and not close:
            return path, f"unknown key (did you mean {near[0]}?); it belongs under runner_config"
    if close:
        return path, f"unknown key (did you mean {close[0]}?)"
    return path, f"unknown key (known here: {', '.join(allowed) or 'none'})"


def _strings(value: Any, path: list[Any]) -> Iterator[tuple[list[Any], str]]:
    """Every string inside ``value``, with its path (depth-first, not in document order)."""
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, dict):
            stack.extend((v, [*where, k]) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, [*where, i]) for i, v in enumerate(item))


def _action_problem(action: dict[str, Any]) -> Problem | None:
    try:
        jsonschema.Draft202012Validator.check_schema(action.get("parameters") or {})
    except jsonschema.SchemaError as error:
        return ["parameters", *error.absolute_path], f"not a JSON Schema: {error.message}"
    unusable = parameters.schema_problem(action.get("parameters") or {})
    if unusable is not None:
        return ["parameters"], unusable
    unsafe = commands.problem(action["runner"], action.get("runner_config") or {})
    if unsafe is not None:
        return ["runner_config", *unsafe[0]], unsafe[1]
    return _template_problem(action.get("runner_config") or {}, ["runner_config"], _CONFIG_NAMES)


def _template_problem(value: Any, path: list[Any], names: frozenset[str]) -> Problem | None:
    for where, text in sorted(_strings(value, path), key=lambda found: str(found[0])):
        wrong = templates.problem(text, names)
        if wrong is not None:
            return where, wrong
    return None


def _rule_problem(rule: dict[str, Any]) -> Problem | None:
    for key, problem in criteria.check(rule.get("criteria") or {}):
        return ["criteria", key], problem
    if "." not in rule["action"]:
        return ["action"], "must be a reference 'pack.action'"
    for path, text in _strings(rule.get("parameters") or {}, ["parameters"]):
        if any(_SECRETS.search(part) for part in _TEMPLATE_PART.findall(text)):
            return path, _RULE_SECRETS
    return _template_problem(rule.get("parameters") or {}, ["parameters"], _RULE_NAMES)


def _schedule_problem(schedule: dict[str, Any]) -> Problem | None:
    return schedules.problem(schedule) or _template_problem(
        schedule.get("parameters") or {}, ["parameters"], schedules.TEMPLATE_NAMES
    )


def _read(path: Path, raw: bytes, kind: str) -> tuple[dict[str, Any], yaml.Node | None]:
    """The checked document and its YAML node tree (to name lines in later errors)."""
    document, root = pack_files.parse(path, raw)
    problem = _shape_problem(document) or _schema_problem(kind, document)
    if problem is not None:
        raise pack_files.invalid(path, root, problem)
    return document, root


def read_pack(directory: Path) -> PackSpec:
    meta, _ = _read(directory / "pack.yaml", pack_files.content(directory / "pack.yaml"), "pack")
    spec = PackSpec(
        meta["name"], meta.get("description", ""), meta.get("policy") or {}, meta.get("pools") or {}
    )
    kinds = (
        ("action", spec.actions, _action_problem, None),
        ("rule", spec.rules, _rule_problem, spec.rule_files),
        ("schedule", spec.schedules, _schedule_problem, spec.schedule_files),
        ("webhook", spec.webhooks, webhooks.problem, None),
    )
    for kind, documents, problem_of, origins in kinds:
        with closing(
            pack_files.files(directory / f"{kind}s")
        ) as files:  # the folder's fd, on error too
            for path, raw in files:
                document, root = _read(path, raw, kind)
                if problem := problem_of(document):
                    raise pack_files.invalid(path, root, problem)
                documents.append(document)
                if origins is not None:
                    origins.append((path, root))
    # A schedule's enforcements are recorded under its ref, as a rule's are under its own.
    rules = {rule["name"] for rule in spec.rules}
    for schedule, (path, root) in zip(spec.schedules, spec.schedule_files, strict=True):
        if schedule["name"] in rules:
            clash = "a rule of this pack has this name too; give the schedule another one"
            raise pack_files.invalid(path, root, (["name"], clash))
    return spec


def load(session: Session, path: Path) -> list[PackSpec]:
    """Validate every pack under ``path`` first, then upsert them; the caller commits."""
    specs = [read_pack(directory) for directory in pack_files.discover(path)]
    _check_references(session, specs)
    loads = [_levels_of(spec) for spec in specs]
    if problem := levels.check(session, loads):
        raise InvalidPack(problem)
    levels.prepare(
        session,
        [spec.name for spec in specs],
        sorted({pool for load in loads for _, _, pools in load.actions for pool in pools}),
    )
    _prepare_execution_events(session, specs)
    pack_ids = [_upsert(session, spec) for spec in specs]
    for load, pack_id in zip(loads, pack_ids, strict=True):
        levels.check_removed(session, pack_id, load, {spec.name for spec in specs})
    levels.store(session, list(zip(pack_ids, loads, strict=True)))
    levels.regroup(session)
    # Every schedule before any rule: a beat firing a schedule holds it, then takes the rules
    # of its event (KEY SHARE); a load that has deleted a rule must not wait for a schedule.
    now = session.execute(select(func.now())).scalar_one()
    for spec, pack_id in zip(specs, pack_ids, strict=True):
        schedules.store(session, pack_id, spec.name, spec.schedules, now)
        webhooks.store(session, pack_id, spec.name, spec.webhooks)
    for spec, pack_id in zip(specs, pack_ids, strict=True):
        _upsert_rules(session, spec, pack_id)
    return specs


def _levels_of(spec: PackSpec) -> levels.PackLevels:
    return levels.of_pack(
        spec.name,
        spec.pools,
        spec.policy,
        [(f"{spec.name}.{a['name']}", a.get("policy") or {}) for a in spec.actions],
    )


def _prepare_execution_events(session: Session, specs: list[PackSpec]) -> None:
    """A load that will switch execution events on or off (its rules are the first, or the
    last, enabled ones on ``usher.execution``) locks executions before anything else."""
    listens = any(
        rule["trigger"] == EXECUTION_TRIGGER and rule.get("enabled", True)
        for spec in specs
        for rule in spec.rules
    )
    state = session.execute(
        sql.query("execution_events_state"), {"packs": [spec.name for spec in specs]}
    ).one()
    if (listens or state.others) != state.enabled:
        session.execute(sql.query("lock_executions_for_trigger"))


def _check_references(session: Session, specs: list[PackSpec]) -> None:
    """Every rule and schedule names an action of these packs or one already loaded."""
    refs = {f"{spec.name}.{action['name']}" for spec in specs for action in spec.actions}
    naming = [
        (document, origin)
        for spec in specs
        for documents, origins in (
            (spec.rules, spec.rule_files),
            (spec.schedules, spec.schedule_files),
        )
        for document, origin in zip(documents, origins, strict=True)
        if "action" in document
    ]
    named = {document["action"] for document, _ in naming} - refs
    if named:
        refs |= set(session.execute(select(Action.ref).where(Action.ref.in_(named))).scalars())
    known = sorted(refs)
    for document, (file, root) in naming:
        if document["action"] not in refs:
            close = difflib.get_close_matches(document["action"], known, n=1)
            hint = f"did you mean {close[0]}?" if close else "load the pack that defines it"
            problem = f"no action {document['action']} in these packs or loaded ({hint})"
            raise pack_files.invalid(file, root, (["action"], problem))


def _upsert(session: Session, spec: PackSpec) -> int:
    """The pack and its actions; returns the pack's id."""
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
            "live_policy": {},  # the files' policy again: no live change holds any more
        }
        update = {k: v for k, v in values.items() if k != "ref"} | {"updated_at": func.now()}
        session.execute(
            insert(Action)
            .values(**values)
            .on_conflict_do_update(index_elements=[Action.ref], set_=update)
        )
    limits.store(session, pack_id=pack_id)
    return int(pack_id)


def _upsert_rules(session: Session, spec: PackSpec, pack_id: int) -> None:
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
