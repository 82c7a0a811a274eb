"""Secrets for templates (``{{ secrets.NAME }}``) and their redaction everywhere they could show.

A secret resolves in the process that uses it, from ``USHER_SECRET_<NAME>`` or else the file
``$USHER_SECRETS_DIR/<NAME>`` (the Docker and Kubernetes convention). Its value is never
stored: every value this process has seen (and every one it could resolve) is replaced by
``***`` in what it records (``redact``) and in every log record it makes
(``install_log_redaction``).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

from app.errors import UsherError

ENV_PREFIX = "USHER_SECRET_"
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MASK = "***"
# Shorter values would mask ordinary words and digits in every log line.
MIN_REDACTED_CHARS = 4
MAX_FILE_BYTES = 64 * 1024


class MissingSecret(UsherError):
    """A template names a secret that is not set."""

    code = "missing_secret"
    status = 422


class SecretValue(str):
    """A resolved secret: a str that templates know not to URL-encode (it is the operator's)."""

    __slots__ = ()


_known: set[str] = set()
_pattern: re.Pattern[str] | None = None
_lock = threading.Lock()


def _remember(value: str) -> None:
    global _pattern
    if len(value) < MIN_REDACTED_CHARS or value in _known:
        return
    with _lock:
        _known.add(value)
        # Longest first, so a secret that contains another is masked whole.
        alternatives = sorted(_known, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(v) for v in alternatives))


# USHER_SECRET_KEY signs the dashboard's cookies: no template may read it.
RESERVED = frozenset({"KEY"})


def resolve(name: str, secrets_dir: Path | None) -> SecretValue:
    if not NAME.match(name):
        raise MissingSecret(f"{name!r} is not a secret name (letters, digits and _)")
    if name in RESERVED:
        raise MissingSecret(f"secret {name} is reserved (USHER_SECRET_{name} is Usher's own)")
    value = os.environ.get(ENV_PREFIX + name)
    if value is None and secrets_dir is not None:
        path = secrets_dir / name
        try:
            with path.open("rb") as handle:
                value = handle.read(MAX_FILE_BYTES + 1).decode().rstrip("\r\n")
        except FileNotFoundError:
            value = None
        except (OSError, UnicodeDecodeError) as error:
            raise MissingSecret(f"secret {name} cannot be read from {path}: {error}") from None
    if value is None:
        where = f"{ENV_PREFIX}{name}" + (f" or {secrets_dir / name}" if secrets_dir else "")
        raise MissingSecret(f"secret {name} is not set ({where})")
    _remember(value)
    return SecretValue(value)


class Secrets:
    """``secrets`` in a template: item (or attribute) access only, nothing to list."""

    __slots__ = ("_dir",)

    def __init__(self, secrets_dir: Path | None) -> None:
        self._dir = secrets_dir

    def __getitem__(self, name: str) -> SecretValue:
        return resolve(str(name), self._dir)

    def __repr__(self) -> str:
        return "<secrets>"


def preload(secrets_dir: Path | None) -> None:
    """Remember every secret this process could resolve, so even one resolved in another
    process (a pool child's result logged by the main process) is masked here."""
    for name, value in os.environ.items():
        if name.startswith(ENV_PREFIX):
            _remember(value)
    if secrets_dir is not None and secrets_dir.is_dir():
        for path in secrets_dir.iterdir():
            if NAME.match(path.name) and path.is_file():
                try:
                    _remember(path.read_bytes()[:MAX_FILE_BYTES].decode().rstrip("\r\n"))
                except (OSError, UnicodeDecodeError):
                    continue


def redact_text(text: str) -> str:
    pattern = _pattern
    return text if pattern is None else pattern.sub(MASK, text)


def unsafe_tail(text: str) -> int:
    """How many of ``text``'s last characters to hold back when it is masked alone, the rest
    of the stream still to come: the longest end of it that begins a known secret (whose
    rest may be on its way), and a secret found across that cut."""
    pattern = _pattern
    if pattern is None:
        return 0
    cut = len(text)
    for secret in _known:
        for size in range(min(len(secret) - 1, len(text)), 0, -1):
            if text.endswith(secret[:size]):
                cut = min(cut, len(text) - size)
                break
    for match in pattern.finditer(text):
        if match.start() < cut < match.end():
            cut = match.start()
    return len(text) - cut


def mask_edges(head: str, tail: str, marker: str = "") -> str:
    """``head + marker + tail`` (each already redacted), with a known secret's start that
    ends ``head``, or its end that starts ``tail``, masked: what is left of a secret that a
    cut went through."""
    for secret in sorted(_known, key=len, reverse=True):
        for size in range(len(secret) - 1, MIN_REDACTED_CHARS - 1, -1):
            if head.endswith(secret[:size]):
                head = head[:-size] + MASK
                break
        for size in range(len(secret) - 1, MIN_REDACTED_CHARS - 1, -1):
            if tail.startswith(secret[-size:]):
                tail = MASK + tail[size:]
                break
    return head + marker + tail


def redact(value: Any) -> Any:
    """``value`` with every known secret inside its strings (and keys) replaced by ``***``."""
    if _pattern is None:
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {redact(k): redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


_factory_installed = False


def install_log_redaction(secrets_dir: Path | None = None) -> None:
    """Mask known secrets in every log record this process makes, whichever logger or
    handler; quiet the HTTP client loggers, which log every full URL (a Slack webhook's path
    is its secret) at INFO."""
    global _factory_installed
    preload(secrets_dir)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with _lock:
        if _factory_installed:
            return
        _factory_installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _pattern is None:
            return record
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler to report
            return record
        masked = redact_text(message)
        if masked != message:  # a record without a secret keeps its arguments
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            if redact_text(text) != text:
                record.exc_text = redact_text(text)
        return record

    logging.setLogRecordFactory(factory)
