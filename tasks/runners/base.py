"""What every runner shares: its input, its errors, and how it reads its config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from app import secretstore
from policies import templates

# Results and captured output are kept in Postgres; cap them.
MAX_OUTPUT_CHARS = 64 * 1024


class RunnerError(Exception):
    """A runner failed. ``permanent`` failures are never retried (HTTP 4xx, bad config,
    a non-zero exit unless the action says it is retryable); the rest are transient."""

    def __init__(self, message: str, permanent: bool = False, details: Any = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.details = details


class RunnerTimeout(RunnerError):
    """The runner gave up after its own timeout (transient: a retry may succeed)."""


class Output(Protocol):
    """Where a runner sends output as it arrives (``tasks.output.Recording``): never blocks."""

    def add(self, stream: str, data: bytes) -> None: ...


@dataclass(frozen=True)
class RunContext:
    """One attempt's input. ``config`` is the action's ``runner_config`` with its templates
    rendered against ``{"parameters": ...}``; ``timeout_s`` is the action's timeout."""

    config: dict[str, Any]
    parameters: dict[str, Any]
    timeout_s: float | None = None
    execution_id: int = 0
    attempt: int = 1
    # Top-level runner_config keys whose value held a template: values that came, or may
    # have come, from a request or an event rather than from the pack.
    templated: frozenset[str] = frozenset()
    # The runner_config as the pack wrote it, before rendering.
    source: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    # The attempt's live output (stdout, stderr), when a worker records it.
    output: Output | None = None

    def require(self, key: str, kind: type | tuple[type, ...] = str) -> Any:
        value = self.config.get(key)
        if not isinstance(value, kind) or value in ("", None):
            raise RunnerError(f"runner_config.{key} is required", permanent=True)
        return value


def timeout_s(ctx: RunContext, default: float, reserve_s: float = 0.0) -> float:
    """The runner's own timeout: ``runner_config.timeout_s``, else the action's, else
    ``default``; kept a margin (a tenth, at most 1 s) plus ``reserve_s`` below the action's
    timeout, so the runner gives up before Celery's soft time limit interrupts it. The
    reserve never takes more than half of the time."""
    configured = ctx.config.get("timeout_s")
    value = (ctx.timeout_s or default) if configured is None else configured
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise RunnerError("runner_config.timeout_s must be a positive number", permanent=True)
    if ctx.timeout_s:
        ceiling = ctx.timeout_s - min(1.0, ctx.timeout_s / 10)
        value = min(value, max(ceiling - reserve_s, ceiling / 2))
    return float(value)


# Keys holding a URL, per runner: what a template puts in them is percent-encoded.
URL_KEYS = {"http": ("url",), "slack": ("webhook_url",)}


def render_config(
    runner: str, config: dict[str, Any], parameters: dict[str, Any], secrets: Any = None
) -> dict[str, Any]:
    context = {"parameters": parameters, "secrets": secrets}
    url_keys = URL_KEYS.get(runner, ())
    rendered = {
        key: templates.render_url(value, context, f"runner_config.{key}")
        if key in url_keys
        else templates.render(value, context, f"runner_config.{key}")
        for key, value in config.items()
    }
    return rendered


def truncate(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    """``text`` with secrets masked, and its middle cut out when it is over ``limit``. Masked
    first: a secret that straddles a cut would otherwise keep the part left standing."""
    text = secretstore.redact_text(text)
    if len(text) <= limit:
        return text
    return cut(
        text[: limit // 2], f"\n... [{len(text) - limit} characters cut] ...\n", text[-limit // 2 :]
    )


def cut(head: str, marker: str, tail: str) -> str:
    """``head + marker + tail`` where a secret's start ending ``head`` or its end starting
    ``tail`` (the rest of it cut away) is masked too."""
    return secretstore.mask_edges(head, tail, marker)
