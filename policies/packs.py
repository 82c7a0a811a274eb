"""Load packs (pack.yaml, actions/*.yaml, rules/*.yaml) into Postgres, idempotently and
all-or-nothing, after checking every file strictly against ``policies.pack_schema``.

Files are read as plain files only (no symlinks), at most 1 MiB each, as plain YAML data:
no aliases (a few hundred bytes of them expand to gigabytes), no tags, at most
``parameters.MAX_DEPTH`` levels deep.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import os
import re
import stat
from collections.abc import Generator, Iterator
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

from app.errors import InvalidPack
from app.models import Action, Pack, Rule
from policies import commands, criteria, limits, pack_schema, parameters

MAX_FILE_BYTES = 1024 * 1024
FILES = "*.y*ml"
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO never blocks
_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_TEMPLATE_PART = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_SECRETS = re.compile(r"(?<![\w.'\"])secrets\b")
_VALIDATORS = {
    kind: jsonschema.Draft202012Validator(schema) for kind, schema in pack_schema.SCHEMAS.items()
}
_RULE_SECRETS = (
    "rule parameters cannot use secrets: they are stored in Postgres with the execution; "
    "secrets belong in the action's runner_config ({{ secrets.NAME }})"
)

Problem = tuple[list[Any], str]  # (the path of the value in the document, what is wrong)


@dataclass
class PackSpec:
    name: str
    description: str
    policy: dict[str, Any]
    actions: list[dict[str, Any]] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML that a pack file may not use (reported without "not valid YAML")."""


class _Loader(yaml.SafeLoader):
    """Plain data only: aliases, anchors and tags refused."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(problem="YAML aliases are not allowed", problem_mark=event.start_mark)
        tag = getattr(event, "tag", None)
        if tag not in (None, "!"):
            raise _Refused(
                problem=f"YAML tags ({tag}) are not allowed; quote the value instead",
                problem_mark=event.start_mark,
            )
        return super().compose_node(parent, index)

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        seen: set[Any] = set()
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode):
                raise _Refused(
                    problem="a key must be a plain value, not a list or a mapping",
                    problem_mark=key.start_mark,
                )
            if key.value in seen:
                # The last one would win silently: a reader of the first sees another file.
                raise _Refused(
                    problem=f"{key.value!r} is given twice in one mapping",
                    problem_mark=key.start_mark,
                )
            seen.add(key.value)
        return node


# Dates stay strings: JSON has none.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _line_of(node: yaml.Node | None, path: list[Any]) -> int | None:
    """The 1-based line of the YAML node at ``path`` (or of its nearest ancestor); for a
    mapping entry, the line of its key."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in path:
        key: yaml.Node | None
        if isinstance(node, yaml.MappingNode):
            key, match = next(((k, v) for k, v in node.value if k.value == part), (None, None))
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            key = match = node.value[part]
        else:
            break
        if key is None or match is None:
            break
        node, line = match, key.start_mark.line + 1
    return line


def _dotted(path: list[Any]) -> str:
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)
    return text.removeprefix(".") or "document"


def _invalid(file: Path, root: yaml.Node | None, problem: Problem) -> InvalidPack:
    path, message = problem
    line = _line_of(root, path)
    return InvalidPack(f"{f'{file}:{line}' if line else file}: {_dotted(path)}: {message}")


def _content(path: Path, dir_fd: int | None = None) -> bytes:
    """The bytes of a regular file, never through a symlink, refused past MAX_FILE_BYTES."""
    try:
        fd = os.open(path.name if dir_fd is not None else path, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as error:
        raise InvalidPack(f"{path}: {_refusal(path, error)}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidPack(f"{path}: not a regular file; pack files are plain files")
        chunks, size = [], 0
        while size <= MAX_FILE_BYTES and (chunk := os.read(fd, MAX_FILE_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > MAX_FILE_BYTES:
        raise InvalidPack(f"{path}: larger than 1 MiB; a pack file is at most 1 MiB")
    return b"".join(chunks)


def _refusal(path: Path, error: OSError) -> str:
    # Only the link is named: what it points to, and what that holds, is none of our business.
    if os.path.islink(path):
        return "a symbolic link; pack files are read as plain files only"
    return error.strerror or str(error)


def _files(directory: Path) -> Generator[tuple[Path, bytes], None, None]:
    """(path, content) of each pack file in ``directory``, by name; none if it is missing."""
    try:
        fd = os.open(directory, _DIR_FLAGS)
    except FileNotFoundError:
        return
    except OSError as error:
        raise InvalidPack(f"{directory}: {_refusal(directory, error)}") from None
    try:
        for name in sorted(n for n in os.listdir(fd) if fnmatch.fnmatch(n, FILES)):
            yield directory / name, _content(directory / name, dir_fd=fd)
    finally:
        os.close(fd)


def _parse(path: Path, raw: bytes) -> tuple[Any, yaml.Node | None]:
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidPack(f"{path}: not UTF-8 text (byte {error.start})") from None
    try:
        return _compose_and_construct(source)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        lead = "" if isinstance(error, _Refused) else "not valid YAML: "
        raise InvalidPack(f"{where}: {lead}{getattr(error, 'problem', None) or error}") from None
    except RecursionError:
        raise InvalidPack(f"{path}: nested deeper than {parameters.MAX_DEPTH} levels") from None
    except ValueError as error:  # an integer of more than 4300 digits
        raise InvalidPack(f"{path}: not valid YAML: {error}") from None


def _compose_and_construct(source: str) -> tuple[Any, yaml.Node | None]:
    loader = _Loader(source)  # may raise already: its reader checks the characters
    try:
        root = loader.get_single_node()
        return (loader.construct_document(root) if root is not None else None), root
    finally:
        loader.dispose()


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
    return None


def _rule_problem(rule: dict[str, Any]) -> Problem | None:
    for key, problem in criteria.check(rule.get("criteria") or {}):
        return ["criteria", key], problem
    if "." not in rule["action"]:
        return ["action"], "must be a reference 'pack.action'"
    for path, text in _strings(rule.get("parameters") or {}, ["parameters"]):
        if any(_SECRETS.search(part) for part in _TEMPLATE_PART.findall(text)):
            return path, _RULE_SECRETS
    return None


def _read(path: Path, raw: bytes, kind: str) -> tuple[dict[str, Any], yaml.Node | None]:
    """The checked document and its YAML node tree (to name lines in later errors)."""
    document, root = _parse(path, raw)
    problem = _shape_problem(document) or _schema_problem(kind, document)
    if problem is not None:
        raise _invalid(path, root, problem)
    return document, root


def read_pack(directory: Path) -> PackSpec:
    meta, _ = _read(directory / "pack.yaml", _content(directory / "pack.yaml"), "pack")
    spec = PackSpec(meta["name"], meta.get("description", ""), meta.get("policy") or {})
    kinds = (("action", spec.actions, _action_problem), ("rule", spec.rules, _rule_problem))
    for kind, documents, problem_of in kinds:
        with closing(_files(directory / f"{kind}s")) as files:  # the folder's fd, on error too
            for path, raw in files:
                document, root = _read(path, raw, kind)
                if problem := problem_of(document):
                    raise _invalid(path, root, problem)
                documents.append(document)
    return spec


def discover(path: Path) -> list[Path]:
    """A pack directory, or a directory of pack directories (none of them a symlink)."""
    if os.path.lexists(path / "pack.yaml"):
        return [path]
    found = sorted(p.parent for p in path.glob("*/pack.yaml"))
    if not found:
        raise InvalidPack(f"{path}: no pack.yaml here or in its subdirectories")
    for directory in found:
        if directory.is_symlink():
            raise InvalidPack(f"{directory}: a symbolic link; packs are read as plain files only")
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
    limits.store(session, pack_id=pack_id)
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
