"""Pack files read safely: plain files only (no symlinks, no FIFOs), at most 1 MiB each, as
plain YAML data: no aliases (a few hundred bytes of them expand to gigabytes), no tags, no
key given twice, at most ``parameters.MAX_DEPTH`` levels deep; errors name file and line.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Generator
from pathlib import Path
from typing import Any

import yaml

from app.errors import InvalidPack
from policies import parameters

MAX_FILE_BYTES = 1024 * 1024
FILES = "*.y*ml"
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO never blocks
_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC

Problem = tuple[list[Any], str]  # (the path of the value in the document, what is wrong)


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


def invalid(file: Path, root: yaml.Node | None, problem: Problem) -> InvalidPack:
    path, message = problem
    line = _line_of(root, path)
    return InvalidPack(f"{f'{file}:{line}' if line else file}: {_dotted(path)}: {message}")


def content(path: Path, dir_fd: int | None = None) -> bytes:
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


def files(directory: Path) -> Generator[tuple[Path, bytes], None, None]:
    """(path, content) of each pack file in ``directory``, by name; none if it is missing."""
    try:
        fd = os.open(directory, _DIR_FLAGS)
    except FileNotFoundError:
        return
    except OSError as error:
        raise InvalidPack(f"{directory}: {_refusal(directory, error)}") from None
    try:
        for name in sorted(n for n in os.listdir(fd) if fnmatch.fnmatch(n, FILES)):
            yield directory / name, content(directory / name, dir_fd=fd)
    finally:
        os.close(fd)


def parse(path: Path, raw: bytes) -> tuple[Any, yaml.Node | None]:
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
        problem = f"{getattr(error, 'problem', None) or error}{_hint(source, mark)}"
        raise InvalidPack(f"{where}: {lead}{problem}") from None
    except RecursionError:
        raise InvalidPack(f"{path}: nested deeper than {parameters.MAX_DEPTH} levels") from None
    except ValueError as error:  # an integer of more than 4300 digits
        raise InvalidPack(f"{path}: not valid YAML: {error}") from None


# A plain value that starts with "*" is a YAML alias: what an unquoted cron line reads as.
_STAR_VALUE = re.compile(r"^\s*(?:-\s+)?[^\s:#][^:#]*:\s+\*")


def _hint(source: str, mark: Any) -> str:
    lines = source.splitlines()
    if mark is None or mark.line >= len(lines) or not _STAR_VALUE.match(lines[mark.line]):
        return ""
    return " (a value starting with * reads as a YAML alias: quote it, cron: '* * * * *')"


def _compose_and_construct(source: str) -> tuple[Any, yaml.Node | None]:
    loader = _Loader(source)  # may raise already: its reader checks the characters
    try:
        root = loader.get_single_node()
        return (loader.construct_document(root) if root is not None else None), root
    finally:
        loader.dispose()


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


# --- a pack tree as one request's body (``usher packs load`` through the API) --------------

KINDS = ("actions", "rules", "schedules", "webhooks")
MAX_BUNDLE_FILES = 1000
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,199}")  # no leading dot: no "..", no /
_BUNDLE_PATH = "<pack>/pack.yaml or <pack>/<actions|rules|schedules|webhooks>/<name>.yaml"


def bundle(path: Path) -> tuple[dict[str, str], dict[str, Path]]:
    """Every file a load of ``path`` reads (read as ``content`` reads it: plain files, 1 MiB
    each), by ``<pack directory>/pack.yaml`` and ``<pack directory>/<kind>s/<file>``: the
    body of ``POST /api/v1/packs``, whose ``unpack`` lays the same tree out again; and
    where each ``<pack directory>`` is here (``here`` names the files of an error so)."""
    found: dict[str, str] = {}
    origins: dict[str, Path] = {}
    for number, directory in enumerate(discover(path), 1):
        # The folder's name names the pack's files in errors; one an upload cannot carry
        # (a space, say) is numbered instead: the pack's own name is in its pack.yaml.
        prefix = directory.name if _SEGMENT.fullmatch(directory.name) else f"pack-{number}"
        origins[prefix] = directory
        sources = [(directory / "pack.yaml", content(directory / "pack.yaml"), "pack.yaml")]
        for kind in KINDS:
            sources += [(file, raw, f"{kind}/{file.name}") for file, raw in files(directory / kind)]
        for file, raw, name in sources:
            if not _SEGMENT.fullmatch(file.name):
                raise InvalidPack(f"{file}: a pack file's name is letters, digits and _ . @ + -")
            try:
                found[f"{prefix}/{name}"] = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InvalidPack(f"{file}: not UTF-8 text (byte {error.start})") from None
    return found, origins


def here(message: str, origins: dict[str, Path]) -> str:
    """An upload's error with its files named where they are here (``bundle``'s origins)."""
    for prefix, directory in origins.items():
        message = re.sub(rf"(?<![\w./-]){re.escape(prefix)}/", f"{directory}/", message)
    return message


def unpack(uploaded: dict[str, str], root: Path) -> None:
    """Lay an uploaded ``bundle`` out under ``root`` (a new, empty directory), refusing any
    path that is not a pack file's (``..``, absolute, hidden, too deep) and any file over
    MAX_FILE_BYTES: nothing is written outside ``root``."""
    if len(uploaded) > MAX_BUNDLE_FILES:
        raise InvalidPack(f"{len(uploaded)} files; an upload holds at most {MAX_BUNDLE_FILES}")
    for key, text in uploaded.items():
        parts = key.split("/")
        shaped = (len(parts) == 2 and parts[1] == "pack.yaml") or (
            len(parts) == 3 and parts[1] in KINDS and fnmatch.fnmatch(parts[2], FILES)
        )
        if not shaped or not all(_SEGMENT.fullmatch(part) for part in parts):
            raise InvalidPack(f"{key[:200]!r} is not a pack file's path ({_BUNDLE_PATH})")
        raw = text.encode("utf-8", errors="surrogatepass")
        if len(raw) > MAX_FILE_BYTES:
            raise InvalidPack(f"{key}: larger than 1 MiB; a pack file is at most 1 MiB")
        target = root.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(raw)
